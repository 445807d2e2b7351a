"""Grid: every plan of the space, at full fidelity, in one round."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from frankensweep.evals.registry import kind_required
from frankensweep.strategies.base import RoundPlan, SearchState, Strategy


class GridSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=kind_required)
    kind: Literal["grid"] = "grid"


class Grid(Strategy):
    kind = "grid"

    def propose(self, state: SearchState) -> RoundPlan | None:
        if state.candidates:
            return None
        return RoundPlan(add=[(p, state.top, None) for p in state.points], last=True)
