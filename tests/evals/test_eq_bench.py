"""EQ-Bench v2 through lm-eval: question loading, scoring parity with lm-eval, real runs."""

from __future__ import annotations

import ast
import json
import time

import pytest
import torch
from lm_eval.api.model import LM
from lm_eval.tasks.eq_bench.utils import calculate_score_fullscale

from frankensweep.evals.eq_bench import (
    AUTO_BATCH_SIZE,
    END_OF_ANSWER,
    EqBenchDataError,
    evaluate_lm,
    first_pass_prompt,
    load_questions,
    parse_answer,
    questions_from_file,
    resolve_batch,
    score_answer,
)
from frankensweep.evals.registry import EqBenchSpec, eval_key, parse_eval

N_SMOKE = 10  # questions run on the real model (~15 s each on an idle 2-core CPU)
N_BATCHED = 16  # questions compared between batch 1 and batched generation


@pytest.fixture(scope="module")
def question_file(shared_data):
    path = shared_data / "eq-bench" / "eq_bench_v2_questions_171.json"
    if not path.is_file():
        pytest.skip(f"EQ-Bench questions not found at {path}")
    return path


@pytest.fixture(scope="module")
def records(question_file):
    return questions_from_file(question_file)


def _answer(record, scores: list[int | str]) -> str:
    """An answer in the EQ-Bench format giving ``scores`` to the four reference emotions."""
    reference = ast.literal_eval(record["reference_answer_fullscale"])
    names = [reference[f"emotion{i}"] for i in range(1, 5)]
    return "\n".join(f"{name}: {score}" for name, score in zip(names, scores, strict=True))


def _reference_scores(record) -> list[int]:
    reference = ast.literal_eval(record["reference_answer_fullscale"])
    return [int(reference[f"emotion{i}_score"]) for i in range(1, 5)]


# ---------------------------------------------------------------- questions


def test_questions_from_file_are_first_pass_records(question_file, records):
    raw = json.loads(question_file.read_text(encoding="utf-8"))
    assert [r["question_id"] for r in records] == [str(i) for i in range(1, 172)]
    for record in records:
        question = raw[record["question_id"]]
        assert (
            ast.literal_eval(record["reference_answer_fullscale"])
            == (question["reference_answer_fullscale"])
        )
        prompt = record["prompt"]
        instructions = prompt.split("[End dialogue]")[1].lower()
        assert "critique" not in instructions and "revised" not in instructions
        assert "First pass scores:" not in prompt
        assert prompt.endswith("Your answer:")
        assert END_OF_ANSWER in prompt
        # the answer format still names every emotion once, the dialogue is untouched
        reference = question["reference_answer_fullscale"]
        for i in range(1, 5):
            assert f"{reference[f'emotion{i}']}: <score>" in prompt
        dialogue = question["prompt"].split("[End dialogue]")[0].strip()
        assert prompt.startswith(dialogue)


def test_first_pass_prompt_is_idempotent(records):
    for record in records[:20]:
        assert first_pass_prompt(record["prompt"]) == record["prompt"]


def test_limit_takes_the_first_questions(question_file):
    assert [r["question_id"] for r in load_questions(question_file, limit=3)] == ["1", "2", "3"]
    with pytest.raises(ValueError, match="limit"):
        load_questions(question_file, limit=0)


def test_missing_file_is_a_clear_error(tmp_path):
    missing = tmp_path / "nope" / "eq_bench_v2_questions_171.json"
    with pytest.raises(EqBenchDataError, match="question file not found"):
        load_questions(missing)
    with pytest.raises(EqBenchDataError, match="question file not found"):
        load_questions("./questions.json")


def test_file_in_another_format_is_a_clear_error(tmp_path):
    bad = tmp_path / "q.json"
    bad.write_text(json.dumps([{"prompt": "x"}]))
    with pytest.raises(EqBenchDataError, match="EQ-Bench format"):
        load_questions(bad)
    bad.write_text("not json")
    with pytest.raises(EqBenchDataError, match="not a JSON file"):
        load_questions(bad)


def test_hub_id_offline_is_a_clear_error(monkeypatch):
    import datasets
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(EqBenchDataError, match=r"hub dataset 'no-such-org/no-such-eq-bench'") as e:
        load_questions("no-such-org/no-such-eq-bench")
    assert "offline" in str(e.value) and "local" in str(e.value)


# ---------------------------------------------------------------- scoring


def _crafted(records) -> dict[str, str]:
    """Crafted answers to the first seven questions: parseable, garbage and partial."""
    r = records
    exact = _answer(r[0], _reference_scores(r[0]))
    return {
        "1": exact,  # parseable, the reference itself: 100
        "2": "Sure! Here are my scores:\n\n" + _answer(r[1], [3, 9, 0, 10]) + "\n\n[End",
        "3": "I cannot rate the feelings of fictional characters.",  # garbage
        "4": "\n".join(_answer(r[3], [1, 2, 3, 4]).splitlines()[:3]),  # partial: 3 emotions
        "5": _answer(r[4], [5, 5, 5, 5]).replace(":", " =", 1),  # one pair malformed
        "6": _answer(r[5], [0, 0, 0, 7]) + "\nConfidence: 9",  # a fifth pair
        "7": "",  # nothing generated
    }


def test_crafted_answers_score_as_lm_eval_scores_them(records):
    answers = _crafted(records)
    by_id = {r["question_id"]: r for r in records}
    parseable = {}
    for qid, answer in answers.items():
        expected = calculate_score_fullscale(by_id[qid], [answer])
        score, ok = score_answer(by_id[qid], answer)
        assert score == pytest.approx(expected["eqbench"]), qid
        assert ok == (expected["percent_parseable"] == 100), qid
        assert (parse_answer(by_id[qid], answer) is not None) == ok, qid
        parseable[qid] = ok
    assert parseable == {
        "1": True,
        "2": True,
        "3": False,
        "4": False,
        "5": False,
        "6": False,
        "7": False,
    }
    assert score_answer(by_id["1"], answers["1"])[0] == pytest.approx(100.0)
    assert parse_answer(by_id["2"], answers["2"]) == dict(
        zip(
            [
                ast.literal_eval(by_id["2"]["reference_answer_fullscale"])[f"emotion{i}"]
                for i in range(1, 5)
            ],
            [3, 9, 0, 10],
            strict=True,
        )
    )


class CannedLM(LM):
    """An lm-eval model that answers each question with a canned text (no model at all)."""

    def __init__(self, answers: dict[str, str]) -> None:
        super().__init__()
        self.answers = answers
        self.requests: list = []

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        self.requests.extend(requests)
        return [self.answers[r.doc["question_id"]] for r in requests]

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError


def test_crafted_answers_through_lm_eval_are_counted_not_fatal(records):
    answers = _crafted(records)
    lm = CannedLM(answers)
    result = evaluate_lm(lm, records[: len(answers)], max_gen_toks=33, chat_template=False)

    assert [i.question_id for i in result.items] == list(answers)
    assert [i.answer for i in result.items] == list(answers.values())
    for item, record in zip(result.items, records, strict=False):
        assert item.prompt == record["prompt"]
        assert item.score == pytest.approx(
            calculate_score_fullscale(record, [item.answer])["eqbench"]
        )
    assert [i.parseable for i in result.items] == [True, True] + [False] * 5
    assert result.items[0].emotions == dict(
        zip(result.items[0].emotions or {}, _reference_scores(records[0]), strict=True)
    )
    assert result.percent_parseable == pytest.approx(100 * 2 / 7)
    assert result.eqbench == pytest.approx(sum(i.score for i in result.items) / 7)
    # the deliberate generation settings reach the model
    _, gen_kwargs = lm.requests[0].args
    assert gen_kwargs["until"] == [END_OF_ANSWER]
    assert gen_kwargs["max_gen_toks"] == 33
    assert gen_kwargs["do_sample"] is False


# ---------------------------------------------------------------- the real model


@pytest.mark.slow
def test_eq_bench_on_smollm2_offline(smollm2, question_file, monkeypatch):
    from frankensweep.evals.eq_bench import run_eq_bench

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    done: list[int] = []
    result = run_eq_bench(
        smollm2.model,
        smollm2.tokenizer,
        str(question_file),
        limit=N_SMOKE,
        max_gen_toks=48,
        progress=done.append,
    )
    print(
        f"\nEQ-Bench on {N_SMOKE} questions: eqbench={result.eqbench:.2f} "
        f"parseable={result.percent_parseable:.0f}% "
        f"{result.seconds_per_question:.1f} s/question"
    )
    assert sum(done) == N_SMOKE
    assert [i.question_id for i in result.items] == [str(i) for i in range(1, N_SMOKE + 1)]
    records = {r["question_id"]: r for r in load_questions(question_file, N_SMOKE)}
    for item in result.items:
        expected = calculate_score_fullscale(records[item.question_id], [item.answer])
        assert item.score == pytest.approx(expected["eqbench"])
        assert item.parseable == (expected["percent_parseable"] == 100)
        assert END_OF_ANSWER not in item.answer
    n_ok = sum(i.parseable for i in result.items)
    assert result.percent_parseable == pytest.approx(100 * n_ok / N_SMOKE)
    assert result.eqbench == pytest.approx(sum(i.score for i in result.items) / N_SMOKE)
    assert n_ok >= 1  # SmolLM2 answers a few in the format; all-garbage means a broken prompt


@pytest.mark.slow
def test_a_view_runs_through_hflm(smollm2, question_file):
    from frankensweep.evals.eq_bench import run_eq_bench
    from frankensweep.search import Plan
    from frankensweep.worker.views import build_view, decoder_stack

    view = build_view(smollm2.model, Plan.parse("0-20,10-30"))
    start = time.perf_counter()
    result = run_eq_bench(view, smollm2.tokenizer, question_file, limit=1, max_gen_toks=16)
    assert time.perf_counter() - start < 600
    (item,) = result.items
    assert item.question_id == "1" and isinstance(item.answer, str)
    assert len(decoder_stack(view)[1]) == 40
    assert len(decoder_stack(smollm2.model)[1]) == 30
    assert smollm2.model.config.num_hidden_layers == 30


# ---------------------------------------------------------------- batches


def test_resolve_batch():
    assert resolve_batch(1, 171) == 1
    assert resolve_batch(32, 171) == 32
    assert resolve_batch(32, 16) == 16  # never more than the questions
    assert resolve_batch("auto", 171) == AUTO_BATCH_SIZE
    assert resolve_batch("auto", 3) == 3
    assert resolve_batch("auto", 171, largest=48) == 48  # the planner's answer
    assert resolve_batch("auto", 171, largest=0) == 1
    for bad in (0, -2, "8", 2.0, True):
        with pytest.raises(ValueError, match="batch_size"):
            resolve_batch(bad, 171)  # type: ignore[arg-type]


def test_batch_size_setting_is_validated_and_not_part_of_the_key():
    assert EqBenchSpec().batch_size == "auto"
    assert parse_eval({"kind": "eq_bench", "batch_size": 16}).batch_size == 16
    for bad in (0, 1025, "many", "8", True, 2.5):
        with pytest.raises(ValueError, match="batch_size"):
            parse_eval({"kind": "eq_bench", "batch_size": bad})
    # how questions are batched does not change the answers: scores are shared
    keys = {eval_key(parse_eval({"kind": "eq_bench", "batch_size": b})) for b in (1, 8, "auto")}
    assert len(keys) == 1
    assert eval_key(parse_eval({"kind": "eq_bench", "max_gen_toks": 81})) not in keys


def _answers(model, tokenizer, question_file, batch_size):
    from frankensweep.evals.eq_bench import run_eq_bench

    calls: list[int] = []
    result = run_eq_bench(
        model,
        tokenizer,
        question_file,
        limit=N_BATCHED,
        batch_size=batch_size,
        progress=calls.append,
    )
    assert [i.question_id for i in result.items] == [str(i) for i in range(1, N_BATCHED + 1)]
    assert calls == [batch_size] * (N_BATCHED // batch_size)  # one call per generated batch
    return [item.answer for item in result.items]


@pytest.mark.slow
def test_batched_answers_equal_batch_1_on_smollm2(smollm2, question_file):
    """Greedy fp32 answers on CPU: batches of 8 and 16 (left-padded by HFLM) give the 16
    answers of batch 1, on the base model and on a view with an overlap (40 positions)."""
    from frankensweep.search import Plan
    from frankensweep.worker.views import build_view

    assert smollm2.dtype == torch.float32
    base = {b: _answers(smollm2.model, smollm2.tokenizer, question_file, b) for b in (1, 8, 16)}
    assert base[8] == base[1]
    assert base[16] == base[1]
    view = build_view(smollm2.model, Plan.parse("0-20,10-30"))
    viewed = {b: _answers(view, smollm2.tokenizer, question_file, b) for b in (1, 8)}
    assert viewed[8] == viewed[1]
    # control: the comparison sees a change of model (the view answers differently)
    assert viewed[1] != base[1]
