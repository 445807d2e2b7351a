"""Search strategies: which plans a sweep evaluates, at which fidelity, round by round.

``grid`` (every plan), ``random`` (a budget of plans), ``halving`` (successive halving over
fidelity levels), ``tpe`` / ``cmaes`` (Optuna ask/tell) and ``surrogate`` (a Gaussian process
over plan structure, optionally guided by the base model's layer prior); ``fidelity.py`` defines
the cheaper levels. A strategy only proposes: it sees a :class:`SearchState` and returns a
:class:`RoundPlan`; ``frankensweep.sweeps.rounds`` stores what it proposes.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, TypeAdapter

from frankensweep.strategies.base import (
    CandidateState,
    RoundPlan,
    SearchState,
    Strategy,
    StrategyError,
)
from frankensweep.strategies.fidelity import FidelityError, Level, full_level, ladder
from frankensweep.strategies.grid import Grid, GridSpec
from frankensweep.strategies.halving import Halving, HalvingSpec
from frankensweep.strategies.model_based import Cmaes, CmaesSpec, Tpe, TpeSpec
from frankensweep.strategies.random_search import RandomSearch, RandomSpec
from frankensweep.strategies.surrogate import Surrogate, SurrogateSpec

StrategySpec = Annotated[
    GridSpec | RandomSpec | HalvingSpec | TpeSpec | CmaesSpec | SurrogateSpec,
    Field(discriminator="kind"),
]
_SPEC: TypeAdapter = TypeAdapter(StrategySpec)

STRATEGIES: dict[str, type[Strategy]] = {
    cls.kind: cls for cls in (Grid, RandomSearch, Halving, Tpe, Cmaes, Surrogate)
}


def parse_strategy(data: Any):
    """A strategy spec from its JSON form (a bare kind string means its defaults)."""
    if isinstance(data, str):
        data = {"kind": data}
    return _SPEC.validate_python(data)


def make_strategy(data: Any) -> Strategy:
    spec = parse_strategy(data)
    return STRATEGIES[spec.kind](spec)


__all__ = [
    "STRATEGIES",
    "CandidateState",
    "Cmaes",
    "CmaesSpec",
    "FidelityError",
    "Grid",
    "GridSpec",
    "Halving",
    "HalvingSpec",
    "Level",
    "RandomSearch",
    "RandomSpec",
    "RoundPlan",
    "SearchState",
    "Strategy",
    "StrategyError",
    "StrategySpec",
    "Surrogate",
    "SurrogateSpec",
    "Tpe",
    "TpeSpec",
    "full_level",
    "ladder",
    "make_strategy",
    "parse_strategy",
]
