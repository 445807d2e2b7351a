"""The math probe: questions from a seed, partial credit per digit, one batched greedy call."""

from __future__ import annotations

import pytest

from frankensweep.evals.probe import (
    Question,
    credit,
    generate_answers,
    make_questions,
    parse_answer,
    prompts,
    score,
)
from frankensweep.evals.registry import ProbeSpec, eval_key, get_eval, parse_eval
from frankensweep.search import Plan
from frankensweep.strategies.fidelity import ladder, scaled
from frankensweep.worker.views import build_view


def test_questions_come_from_the_seed_and_a_shorter_probe_asks_the_first_ones():
    questions = make_questions(16, 3, ("+", "-", "*"), seed=7)
    assert questions == make_questions(16, 3, ("+", "-", "*"), seed=7)
    assert questions != make_questions(16, 3, ("+", "-", "*"), seed=8)
    assert make_questions(5, 3, ("+", "-", "*"), seed=7) == questions[:5]
    assert all(100 <= q.a <= 999 and 100 <= q.b <= 999 for q in questions)
    assert {q.op for q in questions} == {"+", "-", "*"}
    assert all(q.answer >= 0 for q in questions)  # a subtraction puts the larger operand first
    assert Question(812, "*", 43).answer == 34916
    assert Question(812, "*", 43).text == "What is 812 * 43? Answer with the number only."


@pytest.mark.parametrize(
    ("answer", "truth", "expected"),
    [
        ("1234", 1234, 1.0),
        ("1224", 1234, 0.75),  # one digit wrong of four
        ("234", 1234, 0.75),  # a digit missing: three right of the longer four
        ("11234", 1234, 0.8),  # a digit too many: four right of five
        ("4321", 1234, 0.0),  # aligned from the units digit: none agree
        ("0", 0, 1.0),
        (None, 1234, 0.0),
        ("", 1234, 0.0),
    ],
)
def test_credit_counts_right_aligned_digits_over_the_longer_length(answer, truth, expected):
    assert credit(answer, truth) == expected


def test_answers_are_the_first_number_of_the_text():
    assert parse_answer("The answer is 1,234.") == "1234"
    assert parse_answer("812 * 43 = 34916") == "812"  # the first number, as a reader would take
    assert parse_answer("34916\n\nLet me explain: 812 x 43") == "34916"
    assert parse_answer("12,34") == "12"  # not a group of three: the number ends at the comma
    assert parse_answer("no idea") is None
    result = score(
        [Question(500, "+", 734), Question(812, "*", 43), Question(999, "-", 100)],
        ["1234", "The product is 34,906.", "I cannot say"],
    )
    assert result.probe == pytest.approx(100 * (1.0 + 0.8 + 0.0) / 3)
    assert result.exact == pytest.approx(100 / 3)
    assert [i.parsed for i in result.items] == ["1234", "34906", None]


def test_probe_spec_is_keyed_by_its_questions_and_scales_for_cheap_levels():
    spec = parse_eval({"kind": "probe", "questions": 16, "seed": 3})
    impl = get_eval("probe")
    assert impl.cost > get_eval("perplexity").cost and impl.cost < get_eval("eq_bench").cost
    fingerprinted = impl.with_fingerprint(spec)
    assert fingerprinted.fingerprint == impl.digest(spec)
    assert impl.digest(spec) != impl.digest(spec.model_copy(update={"seed": 4}))
    assert eval_key(fingerprinted) != eval_key(impl.with_fingerprint(ProbeSpec(seed=4)))
    cheap = scaled(spec, 1 / 4)
    assert cheap is not None and cheap.questions == 4 and cheap.seed == 3
    levels = ladder([spec], rungs=3, eta=2)
    assert [lv.label for lv in levels] == ["probe on 4 questions", "probe on 8 questions", "full"]
    assert levels[0].loss({"probe": 62.5}) == -62.5  # higher is better
    with pytest.raises(ValueError, match="names an operation twice"):
        parse_eval({"kind": "probe", "operations": ["+", "+"]})


@pytest.mark.slow
def test_batched_answers_equal_one_by_one_answers_in_fp32(smollm2):
    """One left-padded greedy batch gives every question the answer it gets alone (SmolLM2, fp32,
    CPU), for the base model and for a view."""
    spec = ProbeSpec(questions=6, seed=11)
    questions = make_questions(spec.questions, spec.digits, spec.operations, spec.seed)
    # one probe's prompts all have one length: add shorter and longer ones so padding is exercised
    mixed = questions + make_questions(2, 1, ("+",), 1) + make_questions(2, 6, ("*",), 2)
    rows = prompts(smollm2.tokenizer, mixed, chat=True)
    assert len({len(r) for r in rows}) == 3
    for model in (smollm2.model, build_view(smollm2.model, Plan.parse("0-20,16-30"))):
        batched = generate_answers(model, smollm2.tokenizer, rows, spec.max_gen_toks)
        alone = [
            generate_answers(model, smollm2.tokenizer, [row], spec.max_gen_toks)[0] for row in rows
        ]
        assert batched == alone
        assert len(set(batched)) > 1  # real, differing answers
    result = score(mixed, batched)
    assert 0 <= result.probe <= 100 and len(result.items) == 10
