"""EQ-Bench v2 through lm-eval, on any model or view, with every raw answer kept.

The run is ``lm_eval.simple_evaluate`` with ``HFLM(pretrained=<model or view>, tokenizer=...)``
on a task built here (not the registry's ``eq_bench``), with the model's chat template applied.
Questions come from a local file in the EQ-Bench repository format
(``eq_bench_v2_questions_171.json``: ``{"1": {prompt, reference_answer,
reference_answer_fullscale}, ...}``, fully offline) or from a hub dataset with lm-eval's columns
(``pbevan11/EQ-Bench``, split ``validation``).

Deliberate differences from lm-eval's ``eq_bench`` task, and why:

- **First pass only (EQ-Bench v2.1).** The repository's v2 prompts ask for first-pass scores, a
  critique and revised scores. As the EQ-Bench pipeline does without ``--revise``, the revision
  instructions are removed: the "critique ... revised scores" sentence, the ``First pass
  scores:`` heading and the critique / revised-scores block of the answer format; the prompt then
  ends with ``Your answer:``, the form the hub dataset already has (its prompts pass through
  unchanged). Outer whitespace is stripped.
- **Explicit stop.** lm-eval's task sets no ``until``, so lm-eval stops at its default
  ``"\\n\\n"``: a chat model that opens with "Here are my scores:" and a blank line is cut
  before giving any score. Here generation stops at ``[End of answer]`` (the format's own end
  marker), at the tokenizer's EOS (added by HFLM), or after ``max_gen_toks`` tokens (default
  80, as lm-eval), greedily.
- **Scoring is lm-eval's, unchanged:** ``lm_eval.tasks.eq_bench.utils.calculate_score_fullscale``
  (v2 full-scale score per question: 100 for the reference, about 0 for random scores, below 0
  for worse). An answer is parseable when it holds exactly four
  ``Word: N`` pairs naming the four reference emotions; an unparseable answer scores 0 and counts
  0 % parseable (it never fails the run, and it is not dropped: ``eqbench`` is the mean over all
  questions, as in lm-eval, unlike the EQ-Bench pipeline which excludes and retries them).

The model is used where its weights are (HFLM ignores ``device`` for a built module; moving a
view would move the base model's shared tensors): CPU, one GPU, or spread by ``device_map``.

**Batches.** A candidate's questions are generated ``batch_size`` at a time by HFLM's own batching
(``generate_until``: requests sorted longest first, each batch left-padded with an attention
mask, positions counted from the mask by ``generate``, every row generating until all rows hit a
stop sequence or ``max_gen_toks``, each answer then cut at its first stop sequence). A view is a
whole ``*ForCausalLM`` with one KV-cache slot per position, so padding, mask and positions are
handled exactly as on the base model. ``batch_size="auto"`` is resolved by
:func:`resolve_batch`.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import io
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from torch import nn

from frankensweep.core.errors import UserError, first_line
from frankensweep.core.paths import is_hub_id, names_local_file

#: the hub dataset lm-eval's own ``eq_bench`` task reads (EQ-Bench v2, 171 questions)
HUB_DATASET = "pbevan11/EQ-Bench"
HUB_SPLIT = "validation"
TASK_NAME = "frankensweep_eq_bench"
END_OF_ANSWER = "[End of answer]"
DEFAULT_MAX_GEN_TOKS = 80
#: the batch ``auto`` means when no memory planner gives the largest batch that fits
AUTO_BATCH_SIZE = 8

#: questions generated per call: a number, or ``auto`` (see :func:`resolve_batch`)
BatchSize = int | Literal["auto"]

_SCORE_MODULE = "lm_eval.tasks.eq_bench.utils"
_SCORE_FUNCTION = "calculate_score_fullscale"
# lm-eval's parse of an answer: every ``Word: N`` pair, later pairs overriding earlier ones
_PAIR = re.compile(r"(\w+):\s+(\d+)")

_REVISE_SENTENCE = (
    " Then critique your answer by thinking it through step by step."
    " Finally, give your revised scores."
)
_FIRST_PASS_HEADING = "First pass scores:\n"
_CRITIQUE = "Critique: <your critique here>"
_ANSWER_CUE = "\nYour answer:\n"


class EqBenchDataError(UserError, RuntimeError):
    """EQ-Bench questions could not be read; the message says what to change."""


@dataclass(frozen=True)
class EqBenchItem:
    """One question: what the model was asked, what it answered and how that scored."""

    question_id: str
    prompt: str  # the question as sent (revision instructions removed), before the chat template
    answer: str  # the raw generated text, stop sequence removed
    emotions: dict[str, int] | None  # the four parsed emotion scores; None if unparseable
    score: float  # lm-eval's full-scale score: 100 at best, ~0 if random (0 when unparseable)

    @property
    def parseable(self) -> bool:
        return self.emotions is not None


@dataclass(frozen=True)
class EqBenchResult:
    """EQ-Bench v2 of one model: lm-eval's two metrics and every item behind them."""

    eqbench: float  # mean full-scale score over all questions, unparseable ones counting 0
    percent_parseable: float  # 0-100
    items: list[EqBenchItem]
    seconds: float  # wall-clock time of the lm-eval run (generation and scoring)

    @property
    def seconds_per_question(self) -> float:
        return self.seconds / max(len(self.items), 1)


def resolve_batch(batch_size: BatchSize, questions: int, largest: int | None = None) -> int:
    """The number of questions generated per batch for a run of ``questions`` questions.

    A number is taken as given. ``auto`` takes ``largest``, the largest batch the memory planner
    says fits the model, plan and generation length (the worker passes it in; the planner plugs
    in there), or :data:`AUTO_BATCH_SIZE` when no planner answer is given. Never more than the
    number of questions (a larger batch would only pad), never less than 1.
    """
    if batch_size == "auto":
        batch = largest if largest is not None else AUTO_BATCH_SIZE
    elif isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size >= 1:
        batch = batch_size
    else:
        raise ValueError(f"batch_size must be a number >= 1 or 'auto' (got {batch_size!r})")
    return max(1, min(batch, questions))


def first_pass_prompt(prompt: str) -> str:
    """``prompt`` without the critique / revised-scores instructions (idempotent)."""
    if _CRITIQUE not in prompt or END_OF_ANSWER not in prompt:
        return prompt
    prompt = prompt.replace(_REVISE_SENTENCE, "").replace(_FIRST_PASS_HEADING, "")
    head, _, _ = prompt.partition(_CRITIQUE)
    tail = prompt[prompt.index(END_OF_ANSWER) :]
    return head + "\n" + tail + _ANSWER_CUE


def _record(question_id: str, prompt: str, reference: Any) -> dict[str, str]:
    if not isinstance(prompt, str) or reference is None:
        raise EqBenchDataError(
            f"EQ-Bench question {question_id} lacks a prompt or reference_answer_fullscale"
        )
    if not isinstance(reference, str):  # the repository file holds dicts, the hub strings
        reference = repr(dict(reference))
    return {
        "question_id": str(question_id),
        "prompt": first_pass_prompt(prompt).strip(),
        "reference_answer_fullscale": reference,
    }


def questions_from_file(path: str | Path) -> list[dict[str, str]]:
    """Task records from a question file in the EQ-Bench repository format, in file order.

    Each record has ``question_id``, ``prompt`` (first pass only) and
    ``reference_answer_fullscale`` as the string lm-eval's scorer parses.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise EqBenchDataError(
            f"EQ-Bench question file not found: {path} "
            "(expected eq_bench_v2_questions_171.json from the EQ-Bench repository)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EqBenchDataError(f"{path} is not a JSON file: {exc}") from exc
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise EqBenchDataError(
            f"{path} is not in the EQ-Bench format: expected an object of question id -> "
            "{prompt, reference_answer_fullscale}"
        )
    return [
        _record(qid, q.get("prompt"), q.get("reference_answer_fullscale"))
        for qid, q in data.items()
    ]


def questions_from_hub(dataset: str = HUB_DATASET, split: str = HUB_SPLIT) -> list[dict[str, str]]:
    """Task records from a hub dataset with lm-eval's columns; question ids count from 1."""
    import datasets

    try:
        rows = datasets.load_dataset(dataset, split=split)
    except Exception as exc:  # datasets raises many types for "not reachable / not cached"
        first = first_line(exc, type(exc).__name__)
        offline = " (offline mode is on)" if datasets.config.HF_HUB_OFFLINE else ""
        raise EqBenchDataError(
            f"cannot load EQ-Bench questions from hub dataset {dataset!r}{offline}: {first}. "
            "Without network access, pass a local eq_bench_v2_questions_171.json instead."
        ) from exc
    return [
        _record(
            row.get("question_id", row.get("id", index + 1)),
            row.get("prompt"),
            row.get("reference_answer_fullscale"),
        )
        for index, row in enumerate(rows)
    ]


def questions_are_local(questions: str | Path) -> bool:
    """Whether ``questions`` names a local file (anything but a hub dataset id ``org/name``)."""
    text = str(questions)
    return names_local_file(text, (".json",)) or not is_hub_id(text)


def load_questions(questions: str | Path, limit: int | None = None) -> list[dict[str, str]]:
    """Task records from a question file, or from a hub dataset id (``org/name``)."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1 (got {limit})")
    text = str(questions)
    records = questions_from_file(text) if questions_are_local(text) else questions_from_hub(text)
    if not records:
        raise EqBenchDataError(f"no EQ-Bench questions in {text}")
    return records[:limit]


def lm_eval_scorer() -> Callable[[dict, list[str]], dict[str, float]]:
    """lm-eval's own EQ-Bench v2 scoring function (``calculate_score_fullscale``)."""
    return getattr(importlib.import_module(_SCORE_MODULE), _SCORE_FUNCTION)


def score_answer(record: dict[str, str], answer: str) -> tuple[float, bool]:
    """``(score, parseable)`` of ``answer`` by lm-eval's scorer; never raises on the answer."""
    scorer = lm_eval_scorer()
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # it prints every parse failure
            out = scorer(record, [answer])
    except Exception:  # a scorer failure on model output counts as unparseable
        return 0.0, False
    return float(out["eqbench"]), float(out["percent_parseable"]) > 0


def parse_answer(record: dict[str, str], answer: str) -> dict[str, int] | None:
    """The four emotion scores of ``answer`` as lm-eval parses them, or None if unparseable."""
    reference = ast.literal_eval(record["reference_answer_fullscale"])
    emotions = {reference[f"emotion{i}"] for i in range(1, 5)}
    pairs = dict(_PAIR.findall(answer))
    if len(pairs) != 4 or set(pairs) != emotions:
        return None
    return {name: int(value) for name, value in pairs.items()}


def _process_results(doc: dict, results: list[str]) -> dict[str, float]:
    score, parseable = score_answer(doc, results[0])
    return {"eqbench": score, "percent_parseable": 100.0 if parseable else 0.0}


def task_config(records: list[dict[str, str]], max_gen_toks: int) -> dict[str, Any]:
    """The lm-eval task config serving ``records`` (no dataset download)."""
    import datasets

    def dataset(**_metadata: Any) -> datasets.DatasetDict:
        return datasets.DatasetDict({HUB_SPLIT: datasets.Dataset.from_list(records)})

    return {
        "task": TASK_NAME,
        "custom_dataset": dataset,
        "output_type": "generate_until",
        "validation_split": HUB_SPLIT,
        "doc_to_text": "prompt",
        "doc_to_target": "reference_answer_fullscale",
        "process_results": _process_results,
        "generation_kwargs": {
            "until": [END_OF_ANSWER],
            "max_gen_toks": max_gen_toks,
            "do_sample": False,
            "temperature": 0.0,
        },
        "metric_list": [
            {"metric": "eqbench", "aggregation": "mean", "higher_is_better": True},
            {"metric": "percent_parseable", "aggregation": "mean", "higher_is_better": True},
        ],
        "num_fewshot": 0,
        "metadata": {"version": 2.1},
    }


def evaluate_lm(
    lm: Any,
    records: list[dict[str, str]],
    max_gen_toks: int = DEFAULT_MAX_GEN_TOKS,
    chat_template: bool = True,
) -> EqBenchResult:
    """Run ``records`` on an lm-eval ``LM`` through ``simple_evaluate``; keep every answer."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    start = time.perf_counter()
    output = lm_eval.simple_evaluate(
        model=lm,
        tasks=[task_config(records, max_gen_toks)],
        task_manager=TaskManager(include_defaults=False),  # skips indexing ~10k task files
        apply_chat_template=chat_template,
        log_samples=True,
        bootstrap_iters=0,
    )
    seconds = time.perf_counter() - start
    if output is None:  # only non-zero ranks of a distributed run get None
        raise RuntimeError("lm-eval returned no results (not rank 0 of a distributed run?)")

    items = []
    for sample in sorted(output["samples"][TASK_NAME], key=lambda s: s["doc_id"]):
        doc = sample["doc"]
        answer = sample["filtered_resps"][0]
        parseable = sample["percent_parseable"] > 0
        items.append(
            EqBenchItem(
                question_id=doc["question_id"],
                prompt=doc["prompt"],
                answer=answer,
                emotions=parse_answer(doc, answer) if parseable else None,
                score=float(sample["eqbench"]),
            )
        )
    metrics = output["results"][TASK_NAME]
    return EqBenchResult(
        eqbench=float(metrics["eqbench,none"]),
        percent_parseable=float(metrics["percent_parseable,none"]),
        items=items,
        seconds=seconds,
    )


def run_eq_bench(
    model: nn.Module,
    tokenizer: Any,
    questions: str | Path = HUB_DATASET,
    limit: int | None = None,
    max_gen_toks: int = DEFAULT_MAX_GEN_TOKS,
    batch_size: BatchSize = "auto",
    chat_template: bool | None = None,
    progress: Callable[[int], None] | None = None,
    largest_batch: int | None = None,
) -> EqBenchResult:
    """EQ-Bench v2 of ``model`` (a base model or a view) on the first ``limit`` questions.

    ``questions`` is a question file path or a hub dataset id. ``batch_size`` questions are
    generated per call (``auto``: ``largest_batch``, the planner's largest batch that fits, else
    :data:`AUTO_BATCH_SIZE`; see :func:`resolve_batch`). ``chat_template=None`` applies the
    tokenizer's chat template when it has one. ``progress(n)`` is called after every generated
    batch with the number of questions it answered.
    """
    if max_gen_toks < 1:
        raise ValueError(f"max_gen_toks must be at least 1 (got {max_gen_toks})")
    records = load_questions(questions, limit)
    batch = resolve_batch(batch_size, len(records), largest_batch)
    if chat_template is None:
        chat_template = bool(getattr(tokenizer, "chat_template", None))

    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch)
    if progress is not None:
        generate = lm._model_generate

        def counted(context, *args: Any, **kwargs: Any):
            out = generate(context, *args, **kwargs)
            progress(int(context.shape[0]))
            return out

        lm._model_generate = counted
    return evaluate_lm(lm, records, max_gen_toks, chat_template)
