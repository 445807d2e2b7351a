"""The memory a sweep needs on a worker: the planner (``models/memory.py``) applied to a sweep.

A sweep's peak is its model (and each source model) loaded with the sweep's load options, plus
the heaviest of its evals on its deepest plan: EQ-Bench as one batched generation of its longest
prompt (tokenized with the model's tokenizer and chat template, as lm-eval sends it) and
``max_gen_toks`` new tokens, perplexity as one window batch of ``ctx`` tokens with the prefix
states ``FRANKENSWEEP_PREFIX_MEMORY_BUDGET`` allows, preference as one forward of all its
(prompt, continuation) rows. It is estimated at submission, compared
with ``FRANKENSWEEP_WORKER_MEMORY`` and stored with the sweep (``Sweep.memory``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from frankensweep.core.config import Settings
from frankensweep.evals.registry import AnyEvalSpec, EqBenchSpec, PerplexitySpec, PreferenceSpec
from frankensweep.models import LoadOptions, read_config, read_tokenizer
from frankensweep.models.memory import (
    Generation,
    MemoryEstimate,
    Windows,
    Workload,
    largest_batch,
    longest_prompt,
    model_estimate,
)
from frankensweep.search import Plan

__all__ = ["SweepMemory", "eq_bench_batch", "eq_bench_prompt_tokens", "sweep_memory"]

#: perplexity windows per forward on a worker (``worker/evaluate.py``'s default)
PERPLEXITY_BATCH = 1


def eq_bench_batch(spec: EqBenchSpec) -> int | str:
    """The EQ-Bench batch a spec asks for: a number, or ``auto``."""
    return spec.batch_size


@lru_cache(maxsize=64)
def _prompt_tokens(
    model: str, questions: str, limit: int | None, fingerprint: str | None
) -> tuple[int, int]:
    from frankensweep.evals.eq_bench import load_questions

    records = load_questions(questions, limit)
    return longest_prompt(read_tokenizer(model), [r["prompt"] for r in records]), len(records)


def eq_bench_prompt_tokens(model: str, spec: EqBenchSpec) -> tuple[int, int]:
    """Tokens of the longest prompt of the spec's questions as lm-eval sends it to ``model``,
    and how many questions there are (kept per question data: the spec's fingerprint)."""
    return _prompt_tokens(model, spec.questions, spec.limit, spec.fingerprint)


@dataclass(frozen=True)
class SweepMemory:
    """What the planner says of one sweep: its estimate, the worker memory, its inputs."""

    estimate: MemoryEstimate
    limit: int  # FRANKENSWEEP_WORKER_MEMORY, bytes
    deepest: int  # positions of the deepest plan
    dtype: str  # the load dtype, resolved
    cuda: bool  # whether the worker computes on CUDA
    eq_batch: int | None  # the EQ-Bench batch (auto: what the planner picks)

    @property
    def fits(self) -> bool:
        return self.estimate.total <= self.limit

    def to_json(self) -> dict[str, Any]:
        """What is stored with the sweep and shown by the API."""
        data = self.estimate.to_json(self.limit)
        data["deepest_positions"] = self.deepest
        data["device"] = "cuda" if self.cuda else "cpu"
        data["dtype"] = self.dtype
        if self.eq_batch is not None:
            data["eq_bench_batch"] = self.eq_batch
        return data


def _workloads(
    model: str, evals: Sequence[AnyEvalSpec], settings: Settings
) -> tuple[list[Workload], list[tuple[EqBenchSpec, int, int]]]:
    """Perplexity windows and EQ-Bench generations (batch 1 where ``auto``); the EQ-Bench
    specs asking for ``auto`` with their prompt tokens and question counts."""
    work: list[Workload] = []
    auto: list[tuple[EqBenchSpec, int, int]] = []
    for spec in evals:
        if isinstance(spec, PerplexitySpec):
            work.append(Windows(PERPLEXITY_BATCH, spec.ctx, settings.prefix_memory_budget))
        elif isinstance(spec, EqBenchSpec):
            prompt, questions = eq_bench_prompt_tokens(model, spec)
            batch = eq_bench_batch(spec)
            if not isinstance(batch, int):
                auto.append((spec, prompt, questions))
                batch = 1  # auto picks the largest batch that fits: at least one
            work.append(Generation(batch, prompt, spec.max_gen_toks))
        elif isinstance(spec, PreferenceSpec):  # every row in one forward, no prefix states
            from frankensweep.evals.preference import load_prompts, prepare

            rows = prepare(read_tokenizer(model), load_prompts(spec.prompts), spec.chat)
            batch, width = rows.input_ids.shape
            work.append(Windows(int(batch), int(width), 0, name="preference"))
    return work, auto


def sweep_memory(
    model: str,
    load: LoadOptions,
    evals: Sequence[AnyEvalSpec],
    deepest: Plan,
    settings: Settings,
    sources: Mapping[str, str] | None = None,
) -> SweepMemory:
    """The planner's estimate of a worker's peak for a sweep whose deepest plan is
    ``deepest``, with the worker memory it must fit (``FRANKENSWEEP_WORKER_MEMORY``)."""
    work, auto = _workloads(model, evals, settings)
    positions = deepest.layers()
    limit = settings.worker_memory_bytes()
    models = 1 + len(sources or {})
    found, dtype, cuda = model_estimate(
        model, load, positions, work, device=settings.device, models=models
    )
    config = read_config(model)
    eq_batch = None
    for spec, prompt, questions in auto:  # what auto picks (at most all questions at once)
        fitting = largest_batch(
            config,
            load.quantization,
            dtype,
            positions,
            prompt,
            spec.max_gen_toks,
            limit,
            models=models,
        )
        eq_batch = max(1, min(fitting, questions))
    if eq_batch is None:
        batches = [eq_bench_batch(s) for s in evals if isinstance(s, EqBenchSpec)]
        eq_batch = next((b for b in batches if isinstance(b, int)), None)
    return SweepMemory(found, limit, len(positions), dtype, cuda, eq_batch)
