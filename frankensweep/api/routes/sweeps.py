"""Sweeps: submit, list, read, cancel, delete, leaderboard."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.responses import Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from frankensweep.api.deps import MAX_ID, RowId, SessionDep, SettingsDep, WriterDep
from frankensweep.api.routes import StrictJSONRoute
from frankensweep.api.schemas import Leaderboard, SweepCreate, SweepCreated, SweepPublic
from frankensweep.core.config import Settings
from frankensweep.db import Sweep
from frankensweep.db.store import status_counts
from frankensweep.strategies.fidelity import level_detail
from frankensweep.sweeps.config import sweep_config
from frankensweep.sweeps.leaderboard import leaderboard_page_json
from frankensweep.sweeps.rounds import forget
from frankensweep.sweeps.status import cancel_sweep, eta_seconds, liveness, progress
from frankensweep.sweeps.submission import build_sweep, check_active, store_sweep

router = APIRouter(prefix="/api/sweeps", tags=["sweeps"], route_class=StrictJSONRoute)


def get_sweep(session, sweep_id: int) -> Sweep:
    sweep = session.get(Sweep, sweep_id)
    if sweep is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"sweep {sweep_id} not found")
    return sweep


def space_summary(space: dict[str, Any]) -> dict[str, Any]:
    """A stored space without its explicit plans (their count instead)."""
    if not isinstance(space.get("plans"), list):
        return space
    return {**{k: v for k, v in space.items() if k != "plans"}, "plan_count": len(space["plans"])}


def public(
    session: Session, sweep: Sweep, settings: Settings, summary: bool = False
) -> SweepPublic:
    """The API's view of a sweep; ``summary`` leaves explicit plans out (lists of sweeps)."""
    counts = status_counts(session, sweep.id)
    levels = sweep_config(sweep).levels
    live = liveness(session, sweep, settings)
    return SweepPublic(
        id=sweep.id,
        name=sweep.name,
        model=sweep.model,
        models=sweep.models or {},
        load=sweep.load_options,
        memory=sweep.memory,
        num_layers=sweep.num_layers,
        status=sweep.status,
        error=sweep.error,
        space=space_summary(sweep.space) if summary else sweep.space,
        evals=sweep.evals,
        strategy=sweep.strategy,
        round=sweep.round,
        search_finished=sweep.search_finished,
        levels=[level.label for level in levels],
        level_details=[level_detail(level) for level in levels],
        counts=counts,
        total=sum(counts.values()),
        progress=progress(session, sweep),
        eta_seconds=eta_seconds(session, sweep, live.alive or 1),
        workers=live.workers,
        workers_alive=live.alive,
        stall=live.stall,
        created_at=sweep.created_at,
        started_at=sweep.started_at,
        finished_at=sweep.finished_at,
    )


@router.post("", status_code=201, dependencies=[WriterDep])
def create_sweep(
    payload: SweepCreate, session: SessionDep, settings: SettingsDep, request: Request
) -> SweepCreated:
    """Submit a sweep: everything is validated before anything is stored."""
    # errors answer 422 (SubmissionError) or 429 (TooManyActive): see api/errors.py
    check_active(session, settings.max_active_sweeps)  # before the expensive checks
    submission = build_sweep(payload, settings)
    stored = store_sweep(session, submission, settings.max_active_sweeps)  # atomic with the count
    request.app.state.dispatcher.submit(submission.sweep.id)
    return SweepCreated(id=submission.sweep.id, candidates=stored, space=submission.summary)


@router.get("")
def list_sweeps(
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
    limit: int = Query(50, ge=1, le=500, description="sweeps per page"),
    offset: int = Query(0, ge=0, le=MAX_ID, description="sweeps to skip"),
) -> list[SweepPublic]:
    """Sweeps, newest first, a page at a time (``X-Total-Count``: how many there are);
    explicit spaces give their plan count, not their plans (``GET /api/sweeps/{id}`` does)."""
    response.headers["X-Total-Count"] = str(session.scalar(select(func.count(Sweep.id))))
    page = session.scalars(select(Sweep).order_by(Sweep.id.desc()).limit(limit).offset(offset))
    return [public(session, s, settings, summary=True) for s in page]


@router.get("/{sweep_id}")
def read_sweep(sweep_id: RowId, session: SessionDep, settings: SettingsDep) -> SweepPublic:
    """One sweep: status, progress, ETA, the workers holding its units, a stall."""
    return public(session, get_sweep(session, sweep_id), settings)


@router.post("/{sweep_id}/cancel", dependencies=[WriterDep])
def cancel(sweep_id: RowId, session: SessionDep, settings: SettingsDep) -> SweepPublic:
    """Stop a sweep; stored scores stay."""
    sweep = get_sweep(session, sweep_id)
    cancel_sweep(session, sweep)
    session.commit()
    return public(session, sweep, settings)


@router.delete("/{sweep_id}", status_code=204, dependencies=[WriterDep])
def delete(sweep_id: RowId, session: SessionDep) -> Response:
    """Delete a sweep and its candidates (results stay, shared with other sweeps)."""
    sweep = get_sweep(session, sweep_id)
    cancel_sweep(session, sweep)
    session.delete(sweep)
    session.commit()
    forget(session, sweep)
    return Response(status_code=204)


@router.get("/{sweep_id}/leaderboard", response_model=Leaderboard)
def read_leaderboard(
    sweep_id: RowId,
    session: SessionDep,
    metric: str | None = Query(None, description="default: the first eval's metric"),
    limit: int = Query(100, ge=1, le=1000, description="rows per page"),
    offset: int = Query(0, ge=0, le=MAX_ID, description="rows to skip"),
) -> Response:
    """Candidates ranked by a metric, a page at a time, with the base model as reference row."""
    sweep = get_sweep(session, sweep_id)
    page = leaderboard_page_json(session, sweep, metric, limit, offset)  # UnknownMetric: 422
    return Response(page, media_type="application/json")
