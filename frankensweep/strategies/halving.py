"""Successive halving: every plan screened cheaply, the best ``1/eta`` promoted rung by rung.

Rung ``r`` (round ``r``) evaluates its plans at fidelity level ``r`` of the ladder (see
``fidelity.py``: perplexity on few tokens, then more, then the full evals such as EQ-Bench);
after it, the best ``ceil(n / eta)`` go on and the rest are pruned with their rank as reason.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from frankensweep.core.status import CandidateStatus
from frankensweep.evals.registry import kind_required
from frankensweep.strategies.base import RoundPlan, SearchState, Strategy
from frankensweep.strategies.fidelity import Level, ladder


class HalvingSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=kind_required)
    kind: Literal["halving"] = "halving"
    eta: int = Field(3, ge=2, le=10, description="keep the best 1/eta after each rung")
    rungs: int = Field(3, ge=2, le=6, description="fidelity levels, the last the full evals")
    budget: int | None = Field(
        None, ge=1, le=10**6, description="plans in the first rung (seeded draw); None: all"
    )
    seed: int = Field(0, ge=0, le=2**31 - 1)


class Halving(Strategy):
    kind = "halving"

    def levels(self, evals: Sequence) -> list[Level]:
        return ladder(evals, self.spec.rungs, self.spec.eta)

    def stored_plans(self, plans: int) -> int:
        return min(plans, self.spec.budget or plans)

    def evaluations_to_come(self, reached: Sequence[int], top: int) -> dict[int, int]:
        """The best ``ceil(n / eta)`` of each rung go on, up to the top level."""
        if not reached:
            return {}
        rung = max(reached)
        n = sum(1 for level in reached if level == rung)
        to_come = {}
        for level in range(rung + 1, top + 1):
            n = max(1, math.ceil(n / self.spec.eta))
            to_come[level] = n
        return to_come

    def propose(self, state: SearchState) -> RoundPlan | None:
        if not state.candidates:  # the first rung
            points = list(state.points)
            if self.spec.budget is not None and self.spec.budget < len(points):
                points = random.Random(self.spec.seed).sample(points, self.spec.budget)
            return RoundPlan(add=[(p, 0, None) for p in points], last=state.top == 0)
        rung = max(c.fidelity for c in state.candidates)  # the rung that just finished
        if rung >= state.top:
            return None
        level = state.levels[rung]
        ranked = sorted(
            (
                c
                for c in state.candidates
                if c.fidelity == rung and c.status == CandidateStatus.done and c.loss is not None
            ),
            key=lambda c: (c.loss, c.id),
        )
        if not ranked:
            return None
        keep = max(1, math.ceil(len(ranked) / self.spec.eta))
        plan = RoundPlan(
            promote={c.id: rung + 1 for c in ranked[:keep]}, last=rung + 1 == state.top
        )
        for rank, c in enumerate(ranked[keep:], keep + 1):
            loss = c.loss or 0.0  # ranked candidates all have one
            value = -loss if level.higher_is_better else loss
            plan.prune[c.id] = (
                f"pruned after rung {rung + 1} of {len(state.levels)} ({level.label}): "
                f"{level.metric} {value:.4g} ranked {rank} of {len(ranked)}; "
                f"the best {keep} went on"
            )
        return plan
