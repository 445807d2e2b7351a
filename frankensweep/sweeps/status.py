"""A sweep's status rules, in one place: derived from its candidates, cancelled, what is
happening (progress, ETA, the workers holding its units, a stall).

A sweep is ``queued`` until a candidate starts, then ``running``; ``done`` once its strategy has
proposed its last round (``search_finished``) and every candidate finished, or ``failed`` if
none of them could be evaluated. ``cancelled`` and ``failed`` are final: nothing changes them.

Progress is counted in *evaluations*, one candidate at one fidelity level, in the command line,
the API and the dashboard alike; rounds are numbered from 1 wherever a person reads them (the
API's ``round`` field is the stored index, 0 for the first). The total counts what the strategy
will still ask for (``Strategy.evaluations_to_come``: halving's later rungs, the rest of a
tpe/cmaes budget), so it is an estimate until the last round. The ETA prices every evaluation
still to run, this round's and later rounds', at the cost measured so far per unit of work
(plan positions x scored tokens for perplexity, positions x questions for EQ-Bench), divided
among the workers alive.

Every change is a conditional UPDATE (``WHERE status NOT IN (final states)``, ``WHERE status =
running AND claimed_by = me``), never a write of a value read earlier: a cancel committed between
a worker's read and its write is never overwritten.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from frankensweep.core.config import Settings
from frankensweep.db import (
    FINISHED_CANDIDATE,
    FINISHED_SWEEP,
    Candidate,
    CandidateStatus,
    Result,
    Sweep,
    SweepStatus,
)
from frankensweep.db.models import utcnow
from frankensweep.db.store import results_for, rowcount, status_counts
from frankensweep.db.workers import live_workers, workers_of_sweep
from frankensweep.evals.registry import AnyEvalSpec, eval_key, get_eval
from frankensweep.search import Plan
from frankensweep.sweeps.config import sweep_config

__all__ = [
    "FINAL_SWEEP",
    "Liveness",
    "Progress",
    "WorkerState",
    "cancel_sweep",
    "eta_seconds",
    "fail_claimed",
    "finish_claimed",
    "liveness",
    "progress",
    "refresh_sweep",
    "round_label",
]

#: states a sweep never leaves (``done`` may: a resumed strategy can add rounds)
FINAL_SWEEP = (SweepStatus.cancelled, SweepStatus.failed)


def _update_sweep(session: Session, sweep: Sweep, **values: Any) -> bool:
    """Set ``values`` on the sweep unless it reached a final state meanwhile; True if set.

    The in-session object is re-read afterwards, so it shows what is committed or pending."""
    stmt = (
        update(Sweep)
        .where(Sweep.id == sweep.id, Sweep.status.not_in(FINAL_SWEEP))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    changed = rowcount(session.execute(stmt)) == 1
    session.expire(sweep)
    return changed


def refresh_sweep(session: Session, sweep: Sweep) -> str:
    """Derive the sweep's status from its candidates; set timestamps; return the status."""
    session.flush()  # the candidates' and the sweep's pending changes count
    if sweep.status in FINAL_SWEEP:
        return sweep.status
    counts = status_counts(session, sweep.id)
    total = sum(counts.values())
    finished = total - counts[CandidateStatus.pending] - counts[CandidateStatus.running]
    now = utcnow()
    if total and finished == total and sweep.search_finished:
        if counts[CandidateStatus.done] == 0 and counts[CandidateStatus.failed] > 0:
            _update_sweep(
                session,
                sweep,
                status=SweepStatus.failed,
                error=sweep.error or "every candidate failed",
                finished_at=sweep.finished_at or now,
            )
        else:
            _update_sweep(
                session, sweep, status=SweepStatus.done, finished_at=sweep.finished_at or now
            )
    elif finished or counts[CandidateStatus.running]:
        _update_sweep(
            session, sweep, status=SweepStatus.running, started_at=sweep.started_at or now
        )
    return sweep.status


def finish_claimed(
    session: Session,
    ids: Iterable[int],
    claimant: str,
    status: CandidateStatus,
    error: str | None = None,
) -> int:
    """End the evaluation of the candidates ``claimant`` still holds among ``ids``: ``done``,
    or ``failed`` with the reason; the number ended (a cancelled one is left as it is)."""
    stmt = (
        update(Candidate)
        .where(
            Candidate.id.in_(list(ids)),
            Candidate.status == CandidateStatus.running,
            Candidate.claimed_by == claimant,
        )
        .values(status=status, error=error, finished_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return rowcount(session.execute(stmt))


def fail_claimed(session: Session, sweep_id: int, claimant: str, reason: str) -> int:
    """Mark what ``claimant`` still holds of a sweep failed (its unit gave up); return count."""
    result = session.execute(
        update(Candidate)
        .where(
            Candidate.sweep_id == sweep_id,
            Candidate.status == CandidateStatus.running,
            Candidate.claimed_by == claimant,
        )
        .values(status=CandidateStatus.failed, error=reason, finished_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    sweep = session.get(Sweep, sweep_id)
    if sweep is not None:
        refresh_sweep(session, sweep)
    session.commit()
    return rowcount(result)


def cancel_sweep(session: Session, sweep: Sweep) -> bool:
    """Stop a sweep unless it is finished: unfinished candidates become cancelled (stored
    results stay). True if this call cancelled it. The sweep's row is written first, so a worker
    storing a result under :func:`~frankensweep.db.store.lock_sweep` is either done before or
    sees the cancel."""
    now = utcnow()
    stmt = (
        update(Sweep)
        .where(Sweep.id == sweep.id, Sweep.status.in_([SweepStatus.queued, SweepStatus.running]))
        .values(status=SweepStatus.cancelled, finished_at=now)
        .execution_options(synchronize_session=False)
    )
    cancelled = rowcount(session.execute(stmt)) == 1
    if cancelled:
        session.execute(
            update(Candidate)
            .where(
                Candidate.sweep_id == sweep.id,
                Candidate.status.in_([CandidateStatus.pending, CandidateStatus.running]),
            )
            .values(status=CandidateStatus.cancelled, finished_at=now)
            .execution_options(synchronize_session=False)
        )
    session.expire(sweep)
    return cancelled


# -- progress: evaluations finished and to come ---------------------------------------------------


class Progress(BaseModel):
    """Evaluations finished of those the search will run (one candidate at one fidelity level)."""

    finished: int = Field(description="evaluations finished")
    total: int = Field(description="evaluations the search runs in all; an estimate if `estimate`")
    estimate: bool = Field(description="later rounds are not stored yet: the total is estimated")
    pct: int = Field(description="finished / total, in percent, rounded down")
    unit: str = Field(description='"evaluations": a candidate at one fidelity level')
    round: int = Field(description="the round in progress, counted from 1 as every text shows it")
    rounds: int | None = Field(description="rounds the strategy runs, when known (halving)")
    round_label: str = Field(description='e.g. "round 2 of 3" or "round 3 of 3 · last round"')


@dataclass(frozen=True)
class _Row:
    """What the counting needs of one candidate."""

    plan: str
    digest: str
    fidelity: int
    status: str
    is_reference: bool

    @property
    def open(self) -> bool:
        return self.status not in FINISHED_CANDIDATE


def _rows(session: Session, sweep: Sweep) -> list[_Row]:
    stmt = select(
        Candidate.plan,
        Candidate.digest,
        Candidate.fidelity,
        Candidate.status,
        Candidate.is_reference,
    ).where(Candidate.sweep_id == sweep.id)
    return [_Row(p, d, f or 0, st, ref) for p, d, f, st, ref in session.execute(stmt)]


def _to_come(sweep: Sweep, rows: list[_Row]) -> dict[int, int]:
    """Evaluations per level the strategy will still ask for after the current round."""
    if sweep.search_finished or sweep.status in FINISHED_SWEEP:
        return {}
    config = sweep_config(sweep)
    reached = [config.level_of(r.fidelity) for r in rows if not r.is_reference]
    return config.strategy.evaluations_to_come(reached, config.top)


def round_label(sweep: Sweep) -> str:
    """``round 2`` (from 1), ``of 3`` when the strategy's rounds are known, ``· last round``."""
    rounds = _rounds(sweep)
    text = f"round {sweep.round + 1}" + (f" of {rounds}" if rounds else "")
    return text + (" · last round" if sweep.search_finished else "")


def _rounds(sweep: Sweep) -> int | None:
    """Rounds the strategy runs, when known in advance: halving runs one per level."""
    if sweep.strategy.get("kind") == "halving":
        return len(sweep_config(sweep).levels)
    return None


def progress(session: Session, sweep: Sweep) -> Progress:
    """Evaluations finished and expected. Neither runs back when halving sends promoted
    candidates back to pending, nor passes 100% when tpe / cmaes add candidates round by round."""
    rows = _rows(session, sweep)
    top = sweep_config(sweep).top
    finished = outstanding = 0
    for r in rows:
        reached = min(r.fidelity, top)
        start = top if r.is_reference else 0  # the reference runs at full fidelity only
        finished += max(reached - start, 0) + (not r.open)
        outstanding += r.open
    known = finished + outstanding
    total = max(known + sum(_to_come(sweep, rows).values()), known)
    return Progress(
        finished=finished,
        total=total,
        estimate=total > known,
        pct=math.floor(100 * finished / total) if total else 0,
        unit="evaluations",
        round=sweep.round + 1,
        rounds=_rounds(sweep),
        round_label=round_label(sweep),
    )


# -- ETA: every evaluation still to run, at its measured cost -------------------------------------


def _positions(plan: str) -> int:
    return len(Plan.parse(plan))


def _rates(session: Session, model_key: str, specs: dict[str, AnyEvalSpec]) -> dict[str, float]:
    """Seconds per unit of work (positions x ``Eval.work``) per eval kind, measured on the
    latest results stored under the sweep's model key for its own eval settings (every
    sweep's)."""
    stmt = (
        select(Result.plan, Result.eval_key, Result.seconds)
        .where(Result.model == model_key, Result.eval_key.in_(list(specs)))
        .order_by(Result.id.desc())
        .limit(RATE_SAMPLE)
    )
    seconds: dict[str, float] = {}
    work: dict[str, float] = {}
    for plan, key, took in session.execute(stmt):
        spec = specs[key]
        seconds[spec.kind] = seconds.get(spec.kind, 0.0) + took
        work[spec.kind] = work.get(spec.kind, 0.0) + _positions(plan) * get_eval(spec.kind).work(
            spec
        )
    return {kind: seconds[kind] / work[kind] for kind in seconds if work[kind] > 0}


#: results the ETA's cost per unit of work is measured on (the newest of the sweep's settings)
RATE_SAMPLE = 400


def eta_seconds(session: Session, sweep: Sweep, workers: int = 1) -> float | None:
    """Seconds until the search ends: each evaluation still to run (this round's without a
    stored result, and every one the strategy will still ask for) at its measured cost, a round
    spread over ``workers`` (at most one candidate each). None until a cost is measured."""
    if sweep.status in FINISHED_SWEEP:
        return 0.0
    config = sweep_config(sweep)
    rows = _rows(session, sweep)
    open_rows = [r for r in rows if r.open]
    to_come = _to_come(sweep, rows)
    if not open_rows and not to_come:
        return 0.0
    specs = {eval_key(spec): spec for level in config.levels for spec in level.evals}
    rates = _rates(session, config.model_key, specs)
    needed = {spec.kind for level in config.levels for spec in level.evals}
    if not needed <= rates.keys():
        return None
    stored = results_for(session, config.model_key, {r.digest for r in open_rows}, specs)

    def cost(positions: float, level: int, digest: str | None = None) -> float:
        return sum(
            positions * get_eval(spec.kind).work(spec) * rates[spec.kind]
            for spec in config.levels[level].evals
            if digest is None or (digest, eval_key(spec)) not in stored
        )

    workers = max(1, workers)
    now = sum(cost(_positions(r.plan), config.level_of(r.fidelity), r.digest) for r in open_rows)
    total = now / max(1, min(workers, len(open_rows)))
    if to_come:  # later rounds: plans like those of the highest rung so far
        rung = max((config.level_of(r.fidelity) for r in rows if not r.is_reference), default=0)
        like = [_positions(r.plan) for r in rows if not r.is_reference and r.fidelity >= rung]
        mean = sum(like) / len(like) if like else float(sweep.num_layers)
        for level, n in to_come.items():
            total += n * cost(mean, level) / max(1, min(workers, n))
    return total


# -- liveness: the workers holding the sweep's units, and a stall ----------------------------------


class WorkerState(BaseModel):
    """A worker process holding (or, gone silent, last holding) a unit of the sweep."""

    name: str = Field(description="Celery node name (w1@host), or embedded@host")
    host: str
    pid: int
    state: str = Field(
        description="working (heard from lately), silent (not for a few beats), or lost "
        "(silent past the grace: its unit is handed to another worker)"
    )
    candidates: list[int] = Field(description="the candidate ids of the unit it holds")
    activity: str | None = Field(description="what it evaluates now, or what became of it")
    holding_since: datetime | None
    last_seen: datetime
    silent_seconds: float = Field(description="seconds since it was last heard from")


@dataclass
class Liveness:
    """Who works on a sweep: the workers holding its units, the workers alive, a stall."""

    workers: list[WorkerState]
    alive: int  # worker processes heard from within the grace (all sweeps)
    stall: str | None  # what holds the sweep up, in a sentence; None when nothing does


def _state(silent: float, settings: Settings) -> str:
    if silent > settings.heartbeat_grace:
        return "lost"
    return "silent" if silent > SILENT_BEATS * settings.heartbeat_seconds else "working"


#: a worker not heard from for this many heartbeats is shown as silent
SILENT_BEATS = 3


def liveness(session: Session, sweep: Sweep, settings: Settings) -> Liveness:
    """The workers holding the sweep's units (with how long each has been silent), how many
    are alive, and the stall, if any, in a sentence that says what happens next."""
    now = utcnow()
    alive = len(live_workers(session, now - timedelta(seconds=settings.heartbeat_grace)))
    if sweep.status in FINISHED_SWEEP:
        return Liveness([], alive, None)
    states = []
    for w in workers_of_sweep(session, sweep.id):
        silent = max(0.0, (now - w.last_seen).total_seconds())
        states.append(
            WorkerState(
                name=w.name,
                host=w.host,
                pid=w.pid,
                state=_state(silent, settings) if w.claimant else "lost",
                candidates=list(w.candidates or []),
                activity=w.activity,
                holding_since=w.since if w.claimant else None,
                last_seen=w.last_seen,
                silent_seconds=round(silent, 1),
            )
        )
    return Liveness(states, alive, _stall(session, sweep, states, alive, settings))


def _stall(
    session: Session, sweep: Sweep, states: list[WorkerState], alive: int, settings: Settings
) -> str | None:
    grace = settings.heartbeat_grace
    for w in states:
        if not w.candidates or w.state == "working":
            continue
        held = ", ".join(map(str, w.candidates))
        who = f"worker {w.name} (pid {w.pid})"
        if w.state == "lost":
            return (
                f"stalled: {who} holds candidates {held} and has not been heard from for "
                f"{w.silent_seconds:.0f} s: its unit is handed to another worker at the API's "
                f"next check (every {settings.reconcile_seconds:g} s)"
            )
        return (
            f"stalled: {who} holds candidates {held} and has not been heard from for "
            f"{w.silent_seconds:.0f} s; its unit goes to another worker once it has been silent "
            f"for {grace:g} s (FRANKENSWEEP_HEARTBEAT_GRACE)"
        )
    counts = status_counts(session, sweep.id)
    waiting = counts[CandidateStatus.pending] + counts[CandidateStatus.running]
    if not settings.embedded and not alive and waiting:
        return (
            f"stalled: no worker has been heard from in the last {grace:g} s; start one with "
            "`frankensweep worker` (same FRANKENSWEEP_DATABASE_URL and FRANKENSWEEP_BROKER_URL)"
        )
    return None
