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
from frankensweep.sweeps.status import Progress, WorkerState

__all__ = [
    "CandidatePublic",
    "Leaderboard",
    "LeaderboardRow",
    "Progress",
    "SweepCreate",
    "SweepCreated",
    "SweepPublic",
    "WorkerState",
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
    round: int = Field(
        description="index of the round in progress (0: the first; texts, and progress.round, "
        "count from 1)"
    )
    search_finished: bool = Field(description="the search is over: no round is left to propose")
    levels: list[str] = Field(description="the strategy's fidelity levels, the last one full")
    level_details: list[str] = Field(
        description="each level's evals in full, e.g. perplexity windows: a cheap level scores "
        "fewer tokens, in shorter windows when its tokens are fewer than the sweep's ctx"
    )
    counts: dict[str, int] = Field(description="candidates per state")
    total: int = Field(description="candidates stored so far")
    progress: Progress = Field(description="evaluations finished and to come (all rounds)")
    eta_seconds: float | None = Field(
        description="seconds until the search ends: every evaluation still to run, at the cost "
        "measured so far, over the workers alive; null until a cost is measured"
    )
    workers: list[WorkerState] = Field(
        description="worker processes holding a unit of the sweep, and when each was last heard "
        "from (one silent past the grace is shown as lost until its unit is handed over)"
    )
    workers_alive: int = Field(description="worker processes heard from within the grace")
    stall: str | None = Field(description="what holds the sweep up, if anything, in a sentence")
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
    attempts: int = Field(
        description="claims by workers over every fidelity level; each level's first is one, a "
        "worker that died mid-evaluation adds one"
    )
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
