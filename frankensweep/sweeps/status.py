"""A sweep's status rules, in one place: derived from its candidates, cancelled, its ETA.

A sweep is ``queued`` until a candidate starts, then ``running``; ``done`` once its strategy has
proposed its last round (``search_finished``) and every candidate finished, or ``failed`` if
none of them could be evaluated. ``cancelled`` and ``failed`` are final: nothing changes them.

Every change is a conditional UPDATE (``WHERE status NOT IN (final states)``, ``WHERE status =
running AND claimed_by = me``), never a write of a value read earlier: a cancel committed between
a worker's read and its write is never overwritten.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from frankensweep.db import Candidate, CandidateStatus, Sweep, SweepStatus
from frankensweep.db.models import utcnow
from frankensweep.db.store import rowcount, status_counts

__all__ = [
    "FINAL_SWEEP",
    "cancel_sweep",
    "eta_seconds",
    "fail_claimed",
    "finish_claimed",
    "refresh_sweep",
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


def eta_seconds(session: Session, sweep: Sweep) -> float | None:
    """Remaining time from the mean time per finished candidate so far (None until one ends)."""
    counts = status_counts(session, sweep.id)
    done = counts[CandidateStatus.done] + counts[CandidateStatus.failed]
    left = counts[CandidateStatus.pending] + counts[CandidateStatus.running]
    if not left:
        return 0.0
    if not done or sweep.started_at is None:
        return None
    started: datetime = sweep.started_at
    return (utcnow() - started).total_seconds() / done * left
