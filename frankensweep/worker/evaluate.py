"""Evaluate plans of one base model: build each view and score it."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from frankensweep.evals.perplexity import PerplexityResult, perplexity
from frankensweep.evals.prefix import DEFAULT_MEMORY_BUDGET
from frankensweep.search import Plan
from frankensweep.worker.loading import BaseModel
from frankensweep.worker.prefix_views import shared_view_perplexities
from frankensweep.worker.views import build_view


@dataclass(frozen=True)
class PlanPerplexity:
    """The perplexity of one plan, with its cost."""

    plan: Plan
    result: PerplexityResult
    seconds: float

    def to_json(self) -> dict:
        return {
            "plan": str(self.plan),
            "positions": len(self.plan),
            "perplexity": self.result.perplexity,
            "nll": self.result.nll,
            "scored_tokens": self.result.scored_tokens,
            "seconds": round(self.seconds, 3),
        }


def evaluate_perplexity(
    base: BaseModel,
    plans: Sequence[Plan],
    windows: torch.Tensor,
    batch_size: int = 1,
    progress: Callable[[int], None] | None = None,
    prefix_sharing: bool = True,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    sources: Mapping[str, nn.Module] | None = None,
) -> list[PlanPerplexity]:
    """Perplexity of every plan, in the given order; ``progress`` gets (plan, window) units.

    With ``prefix_sharing`` shared layer prefixes run once per batch (results are bitwise the
    same); the time of the whole batch is then split evenly over the plans. ``sources`` are the
    models plans name (``8-16@b``).
    """
    for plan in plans:
        plan.validate(base.num_layers)
    if prefix_sharing:
        start = time.perf_counter()
        results, _ = shared_view_perplexities(
            base.model, plans, windows, batch_size, memory_budget, progress, sources
        )
        share = (time.perf_counter() - start) / max(1, len(plans))
        return [PlanPerplexity(plan, results[plan], share) for plan in plans]
    scored = []
    for plan in plans:
        start = time.perf_counter()
        view = build_view(base.model, plan, sources)
        result = perplexity(view, windows, batch_size=batch_size, progress=progress)
        scored.append(PlanPerplexity(plan, result, time.perf_counter() - start))
    return scored
