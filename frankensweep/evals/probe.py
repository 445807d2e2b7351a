"""A math probe: multi-digit arithmetic generated from a seed, partial credit per correct digit.

In the spirit of the RYS record holders' probe: cheap to run (one batched greedy ``generate``
per candidate), sensitive to a broken layer stack, no data to download.

Questions, exactly: ``random.Random(seed)`` draws, for each question in turn, an operation from
``operations`` (in the order given), then two operands of exactly ``digits`` digits (no leading
zero); a subtraction puts the larger operand first, so no answer is negative. Question ``n`` is
the same whatever ``questions`` is, so a probe of fewer questions (a cheap fidelity level) asks the
first ones of the longer probe. The prompt is ``What is A OP B? Answer with the number only.``,
wrapped in the tokenizer's chat template as a user turn (``chat=True``, the default) or followed by
``\\nAnswer: `` (``chat=False``, for base models without a template).

Answers, exactly: the generated text is cut at the tokenizer's end-of-sequence token; its first
run of digits (commas between groups of three digits dropped: ``1,234`` is ``1234``) is the
answer; none scores 0. The credit of an answer ``a`` for the true answer ``c`` is the number of
positions, aligned from the units digit, where their digits agree, divided by the longer one's
length: ``1234`` for ``1234`` scores 1, ``1224`` scores 0.75, ``234`` scores 0.75, ``11234`` 0.8.

Generation: every question of a candidate in one greedy ``generate`` call, prompts left-padded
(the attention mask hides the padding, so each row's tokens equal its one-by-one generation),
``max_gen_toks`` new tokens at most. ``probe`` is the mean credit in percent; ``exact`` the percent
of answers exactly right.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

#: the operations a probe may ask, by symbol
OPERATIONS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
_NUMBER = re.compile(r"\d{1,3}(?:,\d{3})+(?!\d)|\d+")
_QUESTION = "What is {a} {op} {b}? Answer with the number only."


@dataclass(frozen=True)
class Question:
    """One arithmetic question and its true answer."""

    a: int
    op: str
    b: int

    @property
    def text(self) -> str:
        return _QUESTION.format(a=self.a, op=self.op, b=self.b)

    @property
    def answer(self) -> int:
        return OPERATIONS[self.op](self.a, self.b)


def make_questions(count: int, digits: int, operations: Sequence[str], seed: int) -> list[Question]:
    """The first ``count`` questions of the probe of this seed (module doc)."""
    rng = random.Random(seed)
    low, high = 10 ** (digits - 1), 10**digits - 1
    questions = []
    for _ in range(count):
        op = operations[rng.randrange(len(operations))]
        a, b = rng.randint(low, high), rng.randint(low, high)
        if op == "-" and b > a:
            a, b = b, a
        questions.append(Question(a, op, b))
    return questions


def parse_answer(text: str) -> str | None:
    """The digits of the first number in ``text`` (``1,234`` -> ``1234``), or None."""
    match = _NUMBER.search(text)
    return match.group(0).replace(",", "") if match else None


def credit(answer: str | None, truth: int) -> float:
    """Right-aligned matching digits over the longer length (module doc); 0 without an answer."""
    if not answer:
        return 0.0
    expected = str(truth)
    matches = sum(x == y for x, y in zip(reversed(answer), reversed(expected), strict=False))
    return matches / max(len(answer), len(expected))


@dataclass(frozen=True)
class ProbeItem:
    """One question as asked, the raw answer, what was parsed from it and its credit."""

    question: str
    truth: int
    answer: str
    parsed: str | None
    credit: float


@dataclass(frozen=True)
class ProbeResult:
    probe: float  # mean credit, percent
    exact: float  # percent of answers exactly right
    items: list[ProbeItem]


def score(questions: Sequence[Question], answers: Sequence[str]) -> ProbeResult:
    """Score raw answers (one per question, in order)."""
    items = []
    for q, text in zip(questions, answers, strict=True):
        parsed = parse_answer(text)
        items.append(ProbeItem(q.text, q.answer, text, parsed, credit(parsed, q.answer)))
    n = len(items)
    return ProbeResult(
        probe=100 * sum(i.credit for i in items) / n,
        exact=100 * sum(i.parsed == str(i.truth) for i in items) / n,
        items=items,
    )


def prompts(tokenizer: Any, questions: Sequence[Question], chat: bool) -> list[list[int]]:
    """Token ids of every question's prompt (module doc)."""
    out = []
    for q in questions:
        if chat:
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": q.text}], tokenize=False, add_generation_prompt=True
            )
            out.append(tokenizer(text, add_special_tokens=False)["input_ids"])
        else:
            out.append(tokenizer(q.text + "\nAnswer: ")["input_ids"])
    return out


def generate_answers(
    model: Any, tokenizer: Any, rows: Sequence[Sequence[int]], max_new_tokens: int
) -> list[str]:
    """Greedy answers to every prompt of ``rows`` in one batched ``generate`` (left-padded)."""
    import torch

    device = next(model.parameters()).device
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad if pad is not None else 0, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for n, row in enumerate(rows):
        ids[n, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[n, width - len(row) :] = 1
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad,
            eos_token_id=eos,
        )
    answers = []
    for row in out[:, width:].tolist():
        if eos is not None and eos in row:
            row = row[: row.index(eos)]
        answers.append(tokenizer.decode(row, skip_special_tokens=True))
    return answers
