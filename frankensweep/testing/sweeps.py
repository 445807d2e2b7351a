"""Sweeps for tests and benchmarks: stored directly (rows and scores), or waited on over HTTP."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker

from frankensweep.core.config import Settings
from frankensweep.core.status import FINISHED_SWEEP
from frankensweep.db import Candidate, Sweep
from frankensweep.db.store import upsert_result
from frankensweep.search import Plan

if TYPE_CHECKING:
    from frankensweep.worker.loading import ModelCache

__all__ = ["count_rows", "seed_sweep", "store_scores", "submit_and_run", "wait_sweep"]


def count_rows(url: str) -> tuple[int, int, int]:
    """How many sweeps, candidates and results the database at ``url`` holds."""
    from sqlalchemy import create_engine, func, select

    from frankensweep.db import Result

    engine = create_engine(url)
    with engine.connect() as conn:
        counts = tuple(
            conn.execute(select(func.count()).select_from(table)).scalar_one()
            for table in (Sweep, Candidate, Result)
        )
    engine.dispose()
    return counts  # type: ignore[return-value]


def wait_sweep(client: Any, sweep_id: int, timeout: float = 900, every: float = 0.3) -> dict:
    """Poll ``GET /api/sweeps/{id}`` (a TestClient or an httpx client with a base URL) until
    the sweep is finished; return it."""
    deadline = time.monotonic() + timeout
    sweep: dict = {}
    while time.monotonic() < deadline:
        sweep = client.get(f"/api/sweeps/{sweep_id}").json()
        if sweep["status"] in FINISHED_SWEEP:
            return sweep
        time.sleep(every)
    raise AssertionError(f"sweep {sweep_id} still {sweep.get('status')} after {timeout} s")


def seed_sweep(
    session: Session,
    plans: Sequence[tuple[Plan, dict[str, Any]]],
    candidate: Callable[[int, Plan], dict[str, Any]] = lambda i, plan: {},
    **sweep: Any,
) -> Sweep:
    """Add a sweep row (``sweep``: its columns) whose candidates are ``plans`` with their
    params, the first one the reference; ``candidate(i, plan)`` gives each one's other columns.
    Flushed, not committed."""
    row = Sweep(**sweep)
    row.candidates = [
        Candidate(
            ordinal=i,
            plan=str(plan),
            digest=plan.digest,
            params=params,
            is_reference=i == 0,
            **candidate(i, plan),
        )
        for i, (plan, params) in enumerate(plans)
    ]
    session.add(row)
    session.flush()
    return row


Score = tuple[Plan, str, str, dict[str, float], dict[str, Any] | None]


def store_scores(
    session: Session, model: str, scores: Iterable[Score], seconds: float = 1.0
) -> None:
    """Store results ``(plan, eval key, eval kind, metrics, details)`` of ``model`` (not
    committed)."""
    for plan, key, kind, metrics, details in scores:
        upsert_result(
            session,
            model=model,
            plan=str(plan),
            plan_digest=plan.digest,
            eval_key=key,
            eval_kind=kind,
            metrics=metrics,
            details=details,
            seconds=seconds,
        )


def submit_and_run(
    sessions: sessionmaker[Session],
    settings: Settings,
    payload: dict[str, Any],
    models: ModelCache | None = None,
    claimant: str = "bench",
) -> int:
    """Validate and store a sweep as ``POST /api/sweeps`` does, then evaluate it to its end in
    this process, round by round, as the embedded worker does; its id."""
    from frankensweep.sweeps.request import SweepCreate
    from frankensweep.sweeps.submission import build_sweep, store_sweep
    from frankensweep.worker.dispatch import run_sweep
    from frankensweep.worker.loading import MODELS

    submission = build_sweep(SweepCreate.model_validate(payload), settings)
    with sessions() as s:
        store_sweep(s, submission)
    run_sweep(sessions, settings, submission.sweep.id, claimant, models or MODELS)
    return submission.sweep.id
