"""Fidelity levels: the same evals made cheaper, so strategies can screen plans before scoring.

A *ladder* is a list of levels, cheapest first; the top level is the sweep's own evals (full
fidelity). Lower levels run only the *screen* eval (the first of the sweep's evals that can be
scaled: perplexity by tokens, EQ-Bench by question count when it has a limit, the probe by
question count, its first questions) at a fraction
``eta ** -(distance from the top)`` of its size. Each level ranks plans by one eval's metric.

Perplexity, exactly: a level scores ``t = floor(tokens * fraction)`` tokens (at least 2) of the
same corpus. When ``t`` is below the sweep's ``ctx``, the window shrinks to ``t`` (one window of
``t`` tokens); otherwise windows keep ``ctx`` and ``t`` is rounded down to a multiple of it. So
2048 tokens at ctx 512, eta 3, 3 rungs: 227 tokens in one window of 227, then 512 in one window
of 512, then the full 2048 in four of 512. :func:`level_detail` says so for each level (the
sweep page and the API's ``level_details`` show it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from frankensweep.core.errors import UserError
from frankensweep.evals.registry import (
    REGISTRY,
    AnyEvalSpec,
    EqBenchSpec,
    PerplexitySpec,
    ProbeSpec,
    eval_key,
)

#: fewest tokens a screening perplexity may score (fewer says nothing about a plan)
MIN_SCREEN_TOKENS = 16


class FidelityError(UserError, ValueError):
    """The evals cannot be scaled down as asked; the message says what to change."""


@dataclass(frozen=True)
class Level:
    """One fidelity level: the evals run at it and the one whose metric ranks plans there."""

    evals: tuple[AnyEvalSpec, ...]
    rank_by: AnyEvalSpec  # one of ``evals``
    label: str

    @property
    def metric(self) -> str:
        return REGISTRY[self.rank_by.kind].metric

    @property
    def higher_is_better(self) -> bool:
        return REGISTRY[self.rank_by.kind].higher_is_better

    @cached_property
    def rank_key(self) -> str:
        return eval_key(self.rank_by)

    def loss(self, metrics: dict[str, float]) -> float | None:
        """The ranking metric as a loss (lower is better), or None when missing."""
        value = metrics.get(self.metric)
        if value is None:
            return None
        return -value if self.higher_is_better else value


def scaled(spec: AnyEvalSpec, fraction: float) -> AnyEvalSpec | None:
    """``spec`` at ``fraction`` of its size, or None when it cannot be scaled."""
    if isinstance(spec, PerplexitySpec):
        tokens = max(2, int(spec.tokens * fraction))
        ctx = min(spec.ctx, tokens)
        return spec.model_copy(update={"tokens": tokens // ctx * ctx, "ctx": ctx})
    if isinstance(spec, EqBenchSpec) and spec.limit is not None:
        return spec.model_copy(update={"limit": max(1, math.ceil(spec.limit * fraction))})
    if isinstance(spec, ProbeSpec):
        return spec.model_copy(update={"questions": max(1, math.ceil(spec.questions * fraction))})
    return None


def describe(spec: AnyEvalSpec) -> str:
    if isinstance(spec, PerplexitySpec):
        return f"perplexity on {spec.tokens} tokens"
    if isinstance(spec, EqBenchSpec):
        return f"EQ-Bench on {spec.limit or 'all'} questions"
    if isinstance(spec, ProbeSpec):
        return f"probe on {spec.questions} questions"
    return spec.kind


def detail(spec: AnyEvalSpec) -> str:
    """An eval's size in full: ``perplexity on 56 tokens (1 window of 56)``."""
    if isinstance(spec, PerplexitySpec):
        windows = spec.tokens // spec.ctx
        return f"{describe(spec)} ({windows} window{'s' if windows != 1 else ''} of {spec.ctx})"
    return describe(spec)


def level_detail(level: Level) -> str:
    """Every eval of a level in full, e.g. ``perplexity on 512 tokens (4 windows of 128)``."""
    return " + ".join(detail(spec) for spec in level.evals)


def full_level(evals: Sequence[AnyEvalSpec]) -> Level:
    """The sweep's own evals, ranked by the first one's metric."""
    return Level(tuple(evals), evals[0], "full")


def ladder(evals: Sequence[AnyEvalSpec], rungs: int, eta: int) -> list[Level]:
    """``rungs`` levels, cheapest first, the last the full evals."""
    if rungs < 1 or eta < 2:
        raise FidelityError("halving needs rungs >= 1 and eta >= 2")
    if rungs == 1:
        return [full_level(evals)]
    screen = next((s for s in evals if scaled(s, 0.5) is not None), None)
    if screen is None:
        raise FidelityError(
            "halving screens plans with a cheaper eval: add a perplexity eval (or a probe), or "
            "give the eq_bench eval a limit"
        )
    levels = []
    for r in range(rungs - 1):
        spec = scaled(screen, eta ** -(rungs - 1 - r))
        assert spec is not None  # the screen eval is one that scales
        if isinstance(spec, PerplexitySpec) and spec.tokens < MIN_SCREEN_TOKENS:
            raise FidelityError(
                f"rung {r + 1} of {rungs} would score {spec.tokens} tokens (fewer than "
                f"{MIN_SCREEN_TOKENS}): use fewer rungs, a smaller eta or more tokens"
            )
        levels.append(Level((spec,), spec, describe(spec)))
    return [*levels, full_level(evals)]
