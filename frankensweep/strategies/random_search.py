"""Random search: ``budget`` plans drawn without replacement (seeded), in one round."""

from __future__ import annotations

import random
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from frankensweep.evals.registry import kind_required
from frankensweep.strategies.base import RoundPlan, SearchState, Strategy


class RandomSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=kind_required)
    kind: Literal["random"] = "random"
    budget: int = Field(ge=1, le=10**6, description="plans to evaluate at full fidelity")
    seed: int = Field(0, ge=0, le=2**31 - 1)


class RandomSearch(Strategy):
    kind = "random"

    def stored_plans(self, plans: int) -> int:
        return min(plans, self.spec.budget)

    def propose(self, state: SearchState) -> RoundPlan | None:
        if state.candidates:
            return None
        points = list(state.points)
        chosen = random.Random(self.spec.seed).sample(points, min(self.spec.budget, len(points)))
        return RoundPlan(add=[(p, state.top, None) for p in chosen], last=True)
