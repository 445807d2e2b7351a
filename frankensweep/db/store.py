"""Queries and writes shared by the API and the workers; all idempotent where it matters."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from frankensweep.db.models import (
    FINISHED_CANDIDATE,
    Candidate,
    CandidateStatus,
    Result,
    Sweep,
    SweepStatus,
    utcnow,
)


def upsert_result(
    session: Session,
    *,
    model: str,
    plan: str,
    plan_digest: str,
    eval_key: str,
    eval_kind: str,
    metrics: dict[str, float],
    details: dict[str, Any] | None,
    seconds: float,
) -> bool:
    """Store a result unless the (model, plan, eval) triple already has one; True if stored."""
    values = dict(
        model=model,
        plan=plan,
        plan_digest=plan_digest,
        eval_key=eval_key,
        eval_kind=eval_kind,
        metrics=metrics,
        details=details,
        seconds=seconds,
        created_at=utcnow(),
    )
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - other databases are not supported
        raise RuntimeError(f"unsupported database {dialect}")
    stmt = (
        insert(Result)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["model", "plan_digest", "eval_key"])
    )
    return session.execute(stmt).rowcount == 1


def results_for(
    session: Session, model: str, digests: Iterable[str], eval_keys: Iterable[str]
) -> dict[tuple[str, str], Result]:
    """Stored results of ``model`` for these plan digests and eval keys: (digest, key) -> row."""
    digests, eval_keys = list(digests), list(eval_keys)
    if not digests or not eval_keys:
        return {}
    rows: dict[tuple[str, str], Result] = {}
    for chunk in range(0, len(digests), 500):
        stmt = select(Result).where(
            Result.model == model,
            Result.plan_digest.in_(digests[chunk : chunk + 500]),
            Result.eval_key.in_(eval_keys),
        )
        for r in session.scalars(stmt):
            rows[(r.plan_digest, r.eval_key)] = r
    return rows


def status_counts(session: Session, sweep_id: int) -> dict[str, int]:
    """Candidates per status (every status present, zeros included)."""
    counts = dict.fromkeys((s.value for s in CandidateStatus), 0)
    stmt = (
        select(Candidate.status, func.count())
        .where(Candidate.sweep_id == sweep_id)
        .group_by(Candidate.status)
    )
    for status, n in session.execute(stmt):
        counts[status] = n
    return counts


def claim(session: Session, candidate_ids: Sequence[int], claimant: str) -> list[Candidate]:
    """Mark these candidates running for ``claimant``; return those it now holds.

    A pending candidate is taken; a running one only if ``claimant`` already held it (the same
    task redelivered after its worker died). Finished candidates are never taken again.
    """
    session.execute(
        update(Candidate)
        .where(
            Candidate.id.in_(candidate_ids),
            or_(
                Candidate.status == CandidateStatus.pending,
                and_(
                    Candidate.status == CandidateStatus.running,
                    Candidate.claimed_by == claimant,
                ),
            ),
        )
        .values(
            status=CandidateStatus.running,
            claimed_by=claimant,
            started_at=utcnow(),
            attempts=Candidate.attempts + 1,
        )
    )
    session.commit()
    return list(
        session.scalars(
            select(Candidate)
            .where(
                Candidate.id.in_(candidate_ids),
                Candidate.status == CandidateStatus.running,
                Candidate.claimed_by == claimant,
            )
            .order_by(Candidate.ordinal)
        )
    )


def release_running(session: Session, sweep_id: int | None = None) -> int:
    """Put running candidates back to pending (their in-process worker is gone); return count."""
    stmt = update(Candidate).where(Candidate.status == CandidateStatus.running)
    if sweep_id is not None:
        stmt = stmt.where(Candidate.sweep_id == sweep_id)
    result = session.execute(stmt.values(status=CandidateStatus.pending, claimed_by=None))
    session.commit()
    return result.rowcount


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
    return result.rowcount


def finish_candidate(
    session: Session, candidate: Candidate, status: CandidateStatus, error: str | None = None
) -> None:
    candidate.status = status
    candidate.error = error
    candidate.finished_at = utcnow()


def refresh_sweep(session: Session, sweep: Sweep) -> str:
    """Derive the sweep's status from its candidates; set timestamps; return the status.

    A sweep is done when its strategy proposed its last round and every candidate finished.
    """
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


def cancel_sweep(session: Session, sweep: Sweep) -> None:
    """Stop a sweep: unfinished candidates become cancelled; stored results stay."""
    if sweep.status in (SweepStatus.done, SweepStatus.failed, SweepStatus.cancelled):
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


def unfinished_sweeps(session: Session) -> list[Sweep]:
    return list(
        session.scalars(
            select(Sweep)
            .where(Sweep.status.in_([SweepStatus.queued, SweepStatus.running]))
            .order_by(Sweep.id)
        )
    )


def pending_candidates(session: Session, sweep_id: int) -> list[Candidate]:
    """Candidates still to evaluate (running ones included: their worker may have died)."""
    return list(
        session.scalars(
            select(Candidate)
            .where(
                Candidate.sweep_id == sweep_id,
                Candidate.status.in_([CandidateStatus.pending, CandidateStatus.running]),
            )
            .order_by(Candidate.ordinal)
        )
    )


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
