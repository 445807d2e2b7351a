"""Worker heartbeats: each worker process's row in ``workers``, and the claims of silent ones.

A worker process writes its row every few seconds (``beat``): when it was last seen and the unit
it holds (claimant, sweep, candidate ids, what it evaluates now). A claim is *silent* when its
candidates have been running for longer than the grace and no row holding that claimant was seen
within it; ``end_claim`` gives such candidates back (pending, attempts kept) so that another
worker evaluates them. Nothing here decides the grace: callers pass the cut-off time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from frankensweep.core.status import CandidateStatus
from frankensweep.db.models import Candidate, Worker, utcnow
from frankensweep.db.store import rowcount

__all__ = [
    "Holding",
    "beat",
    "drop_stale",
    "end_claim",
    "forget",
    "idle_workers",
    "live_workers",
    "namesakes",
    "release_holder",
    "silent_claims",
    "workers_of_claimants",
    "workers_of_sweep",
]


@dataclass(frozen=True)
class Holding:
    """The unit a worker process holds: its claimant (task id), sweep and candidate ids."""

    claimant: str
    sweep_id: int
    candidates: tuple[int, ...]


def beat(
    session: Session,
    name: str,
    host: str,
    pid: int,
    holding: Holding | None,
    activity: str | None = None,
) -> None:
    """Record that this worker process is alive now, and what it holds (committed)."""
    now = utcnow()
    row = session.scalar(select(Worker).where(Worker.name == name, Worker.pid == pid))
    if row is None:
        row = Worker(name=name, host=host, pid=pid, started_at=now, since=now)
        session.add(row)
    claimant = holding.claimant if holding else None
    if row.claimant != claimant or (holding and row.sweep_id != holding.sweep_id):
        row.since = now  # it began holding this unit, or to idle
    row.host, row.last_seen, row.claimant = host, now, claimant
    row.sweep_id = holding.sweep_id if holding else None
    row.candidates = list(holding.candidates) if holding else None
    row.activity = activity if holding else None
    session.commit()


def forget(session: Session, name: str, pid: int) -> None:
    """Delete a worker process's row (it stops cleanly)."""
    session.execute(delete(Worker).where(Worker.name == name, Worker.pid == pid))
    session.commit()


def namesakes(session: Session, name: str, host: str) -> list[Worker]:
    """The rows of worker ``name`` on ``host`` (this process's, and earlier processes')."""
    return list(session.scalars(select(Worker).where(Worker.name == name, Worker.host == host)))


def live_workers(session: Session, since: datetime) -> list[Worker]:
    """Worker processes seen at or after ``since``, by name and pid."""
    stmt = select(Worker).where(Worker.last_seen >= since).order_by(Worker.name, Worker.pid)
    return list(session.scalars(stmt))


def idle_workers(session: Session, since: datetime) -> list[Worker]:
    """Worker processes heard from at or after ``since`` that have held nothing since then (a
    worker with room to work takes the next unit queued: its queue has been empty)."""
    stmt = select(Worker).where(
        Worker.last_seen >= since, Worker.claimant.is_(None), Worker.since < since
    )
    return list(session.scalars(stmt))


def workers_of_sweep(session: Session, sweep_id: int) -> list[Worker]:
    """Worker processes holding (or, silent, last holding) a unit of this sweep."""
    stmt = select(Worker).where(Worker.sweep_id == sweep_id).order_by(Worker.name, Worker.pid)
    return list(session.scalars(stmt))


def workers_of_claimants(session: Session, claimants: Sequence[str]) -> list[Worker]:
    """The rows that hold these claimants (the latest seen last)."""
    stmt = select(Worker).where(Worker.claimant.in_(list(claimants))).order_by(Worker.last_seen)
    return list(session.scalars(stmt))


def silent_claims(session: Session, before: datetime) -> dict[str, tuple[int, list[int]]]:
    """Claims nobody vouches for: claimant -> (sweep id, candidate ids) of candidates running
    since before ``before`` whose claimant no worker row seen at or after ``before`` holds."""
    alive = {w.claimant for w in live_workers(session, before) if w.claimant}
    stmt = (
        select(Candidate.id, Candidate.sweep_id, Candidate.claimed_by)
        .where(Candidate.status == CandidateStatus.running, Candidate.started_at < before)
        .order_by(Candidate.ordinal)
    )
    claims: dict[str, tuple[int, list[int]]] = {}
    for cid, sweep_id, claimant in session.execute(stmt):
        if claimant is None or claimant in alive:
            continue
        claims.setdefault(claimant, (sweep_id, []))[1].append(cid)
    return claims


def end_claim(session: Session, claimant: str, candidate_ids: Sequence[int]) -> int:
    """Give a silent claim's candidates back: pending, unclaimed, attempts kept (not
    committed); returns how many were still running under ``claimant``."""
    result = session.execute(
        update(Candidate)
        .where(
            Candidate.id.in_(list(candidate_ids)),
            Candidate.status == CandidateStatus.running,
            Candidate.claimed_by == claimant,
        )
        .values(status=CandidateStatus.pending, claimed_by=None, started_at=None)
    )
    return rowcount(result)


def release_holder(session: Session, claimant: str, note: str) -> None:
    """The rows that held ``claimant`` hold nothing now; ``note`` says why (not committed)."""
    session.execute(
        update(Worker)
        .where(Worker.claimant == claimant)
        .values(claimant=None, candidates=None, activity=note)
    )


def drop_stale(session: Session, before: datetime) -> int:
    """Delete rows not seen since ``before`` (processes long gone); not committed."""
    return rowcount(session.execute(delete(Worker).where(Worker.last_seen < before)))
