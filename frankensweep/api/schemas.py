"""Request and response models of the REST API (a model family per concept)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from frankensweep.evals.registry import EvalSpec
from frankensweep.strategies import StrategySpec

# bounded so that a range's length is a machine integer (bigger: OverflowError, a 500)
Int32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
IntOrRange = Annotated[
    Int32 | list[Int32],
    Field(description="a value, [min, max] or [min, max, step] (inclusive)"),
]


class FiltersIn(BaseModel):
    """Optional plan filters; counts of what each removed are reported with the sweep."""

    model_config = ConfigDict(extra="forbid")
    max_repeats: int | None = Field(None, ge=1)
    min_last_slice: int | None = Field(None, ge=1)
    min_jump: int | None = Field(None, ge=1)  # Filters refuses 0 (was a 500)
    max_jump_fraction: float | None = Field(None, gt=0, allow_inf_nan=False)


class OverlapSpaceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["overlap"]
    slice_size: IntOrRange
    jump: IntOrRange
    last_slice: IntOrRange
    first_slice: IntOrRange | None = None
    filters: FiltersIn | None = None


class RysSpaceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["rys"]
    filters: FiltersIn | None = None


class ExplicitSpaceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["explicit"]
    plans: list[str] = Field(default_factory=list, description='plans like "0-16,8-24,16-30"')
    recipes: list[str] = Field(
        default_factory=list, description="mergekit passthrough YAML recipes, read as plans"
    )
    filters: FiltersIn | None = None


SpaceIn = Annotated[OverlapSpaceIn | RysSpaceIn | ExplicitSpaceIn, Field(discriminator="kind")]


class SweepCreate(BaseModel):
    """A sweep to run: base model + space + eval suite + strategy."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00]*$")  # PostgreSQL: no NUL
    model: str = Field(min_length=1, max_length=1000, description="HF directory, hub id or .gguf")
    space: SpaceIn
    evals: list[EvalSpec] = Field(min_length=1, max_length=10)
    strategy: StrategySpec | Literal["grid", "halving"] = Field(
        "grid",
        description="grid (every plan), random / tpe / cmaes (with a budget), halving; "
        "a bare name means its defaults",
    )


class SweepCreated(BaseModel):
    id: int
    candidates: int
    space: dict[str, Any] = Field(description="how the space was enumerated: kept, removed, ...")


class SweepPublic(BaseModel):
    id: int
    name: str
    model: str
    num_layers: int
    status: str
    error: str | None
    space: dict[str, Any]
    evals: list[dict[str, Any]]
    strategy: dict[str, Any]
    round: int = Field(description="the evaluation round in progress (0: the first)")
    search_finished: bool = Field(description="the search is over: no round is left to propose")
    levels: list[str] = Field(description="the strategy's fidelity levels, the last one full")
    counts: dict[str, int]
    total: int
    eta_seconds: float | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class CandidatePublic(BaseModel):
    id: int
    sweep_id: int
    plan: str
    digest: str
    positions: int
    params: dict[str, Any]
    is_reference: bool
    status: str
    error: str | None
    attempts: int
    fidelity: int = Field(description="fidelity level reached (the strategy's top: full evals)")
    fidelity_label: str = Field(description='e.g. "full" or "perplexity on 227 tokens"')
    round: int = Field(description="the round it was last evaluated in")
    trial: int | None = Field(description="its Optuna trial number (tpe, cmaes)")
    pruned_reason: str | None
    scores: dict[str, float] = Field(description="metrics of the sweep's evals at full fidelity")
    results: list[dict[str, Any]] = Field(
        description="per eval (every fidelity level reached): key, kind, metrics, details"
    )
    started_at: datetime | None
    finished_at: datetime | None


class LeaderboardRow(BaseModel):
    rank: int | None = Field(description="None while the candidate has no score for the metric")
    candidate_id: int
    plan: str
    positions: int
    params: dict[str, Any]
    status: str
    scores: dict[str, float] = Field(description="at full fidelity; ranked rows have the metric")
    fidelity: int
    fidelity_label: str
    partial_scores: dict[str, float] = Field(
        description="below full fidelity: the metrics at the level reached (not comparable)"
    )
    pruned_reason: str | None


class Leaderboard(BaseModel):
    sweep_id: int
    metric: str
    higher_is_better: bool
    total: int = Field(description="ranked and unranked rows of the whole board")
    offset: int = Field(0, description="index of the first row returned in the whole board")
    reference: LeaderboardRow | None = Field(description="the base model itself (plan 0-N)")
    rows: list[LeaderboardRow] = Field(description="ranked rows first, then unranked")
