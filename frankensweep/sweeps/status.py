"""A sweep's status rules, in one place: derived from its candidates, cancelled, its ETA.

A sweep is ``queued`` until a candidate starts, then ``running``; ``done`` once its strategy has
proposed its last round (``search_finished``) and every candidate finished, or ``failed`` if
none of them could be evaluated. ``cancelled`` and ``failed`` are final: nothing changes them.
"""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.orm import Session

from frankensweep.db import (
    FINISHED_CANDIDATE,
    FINISHED_SWEEP,
    Candidate,
    CandidateStatus,
    Sweep,
    SweepStatus,
)
from frankensweep.db.models import utcnow
from frankensweep.db.store import rowcount, status_counts

__all__ = ["cancel_sweep", "eta_seconds", "fail_claimed", "finish_candidate", "refresh_sweep"]


def refresh_sweep(session: Session, sweep: Sweep) -> str:
    """Derive the sweep's status from its candidates; set timestamps; return the status."""
    if sweep.status in (SweepStatus.cancelled, SweepStatus.failed):
        return sweep.status
    counts = status_counts(session, sweep.id)
    total = sum(counts.values())
    finished = sum(counts[s] for s in FINISHED_CANDIDATE)
    if total and finished == total and sweep.search_finished:
        if counts[CandidateStatus.done] == 0 and counts[CandidateStatus.failed] > 0:
            sweep.status = SweepStatus.failed
            sweep.error = sweep.error or "every candidate failed"
        else:
            sweep.status = SweepStatus.done
        sweep.finished_at = sweep.finished_at or utcnow()
    elif finished or counts[CandidateStatus.running]:
        sweep.status = SweepStatus.running
        sweep.started_at = sweep.started_at or utcnow()
    return sweep.status


def finish_candidate(
    candidate: Candidate, status: CandidateStatus, error: str | None = None
) -> None:
    """End a candidate's evaluation: ``done``, or ``failed`` with the reason."""
    candidate.status = status
    candidate.error = error
    candidate.finished_at = utcnow()


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
    )
    sweep = session.get(Sweep, sweep_id)
    if sweep is not None:
        refresh_sweep(session, sweep)
    session.commit()
    return rowcount(result)


def cancel_sweep(session: Session, sweep: Sweep) -> None:
    """Stop a sweep: unfinished candidates become cancelled; stored results stay."""
    if sweep.status in FINISHED_SWEEP:
        return
    session.execute(
        update(Candidate)
        .where(
            Candidate.sweep_id == sweep.id,
            Candidate.status.in_([CandidateStatus.pending, CandidateStatus.running]),
        )
        .values(status=CandidateStatus.cancelled, finished_at=utcnow())
    )
    sweep.status = SweepStatus.cancelled
    sweep.finished_at = utcnow()


def eta_seconds(session: Session, sweep: Sweep) -> float | None:
    """Remaining time from the mean time per finished candidate so far (None until one ends)."""
    counts = status_counts(session, sweep.id)
    done = counts[CandidateStatus.done] + counts[CandidateStatus.failed]
    left = counts[CandidateStatus.pending] + counts[CandidateStatus.running]
    if not left:
        return 0.0
    if not done or sweep.started_at is None:
        return None
    return (utcnow() - sweep.started_at).total_seconds() / done * left
