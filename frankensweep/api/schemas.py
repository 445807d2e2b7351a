"""Request and response models of the REST API (a model family per concept).

The request body (``SweepCreate``) and the leaderboard belong to the sweep lifecycle and are
re-exported here, so that every model the API speaks is found in one module.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from frankensweep.sweeps.leaderboard import Leaderboard, LeaderboardRow
from frankensweep.sweeps.request import SweepCreate

__all__ = [
    "CandidatePublic",
    "Leaderboard",
    "LeaderboardRow",
    "SweepCreate",
    "SweepCreated",
    "SweepPublic",
]


class SweepCreated(BaseModel):
    id: int
    candidates: int
    space: dict[str, Any] = Field(description="how the space was enumerated: kept, removed, ...")


class SweepPublic(BaseModel):
    id: int
    name: str
    model: str
    models: dict[str, str] = Field(description="source models its plans may name: name -> model")
    load: dict[str, Any] | None = Field(
        description="how workers load the model (null: stored before load options)"
    )
    memory: dict[str, Any] | None = Field(
        description="the memory planner's estimate of a worker's peak at submission: "
        "estimate_bytes, limit_bytes (FRANKENSWEEP_WORKER_MEMORY), peak, parts "
        "(weights, loading, kv_cache, prefix_states, logits, activations: those of the peak), "
        "workloads (each eval's runtime bytes), deepest_positions, "
        "device, dtype, eq_bench_batch (null: stored before the planner)"
    )
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
