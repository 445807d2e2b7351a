"""Queries and writes shared by the API and the workers; all idempotent where it matters."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, cast

from sqlalchemy import CursorResult, and_, false, func, or_, select, update
from sqlalchemy import Result as Result_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from frankensweep.db.models import (
    Candidate,
    CandidateStatus,
    Result,
    Sweep,
    SweepStatus,
    utcnow,
)

#: the columns a result is unique by
RESULT_KEY = ("model", "plan_digest", "eval_key")


def rowcount(result: Result_[Any]) -> int:
    """Rows an UPDATE / INSERT / DELETE touched (its result is a cursor result)."""
    return cast(CursorResult[Any], result).rowcount


def write_lock(session: Session) -> None:
    """Serialize this transaction with every other one that takes the lock (until it ends).

    PostgreSQL: a transaction-scoped advisory lock. SQLite: a write statement, which takes the
    database's one write lock at once (a deferred transaction would only take it at its first
    write, after its reads).
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(_LOCK_ID)))
    else:
        session.execute(update(Sweep).where(false()).values(id=Sweep.id))


#: the advisory lock id of :func:`write_lock` ("fs" + a number of our own)
_LOCK_ID = 0x6673_0001


def lock_sweep(session: Session, sweep_id: int) -> str | None:
    """Lock the sweep's row until this transaction ends and return its status as committed
    (None if it was deleted): a status change committed by another transaction (a cancel)
    either happened before (and is seen) or waits for this transaction to end."""
    stmt = (
        update(Sweep)
        .where(Sweep.id == sweep_id)
        .values(status=Sweep.status)
        .returning(Sweep.status)
        .execution_options(synchronize_session=False)
    )
    return session.execute(stmt).scalar_one_or_none()


def active_sweeps(session: Session) -> int:
    """Sweeps queued or running."""
    stmt = select(func.count()).where(Sweep.status.in_([SweepStatus.queued, SweepStatus.running]))
    return session.execute(stmt).scalar_one()


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
        stmt = postgresql.insert(Result).values(**values)
        stmt = stmt.on_conflict_do_nothing(index_elements=list(RESULT_KEY))
        return rowcount(session.execute(stmt)) == 1
    if dialect == "sqlite":
        lite = sqlite.insert(Result).values(**values)
        lite = lite.on_conflict_do_nothing(index_elements=list(RESULT_KEY))
        return rowcount(session.execute(lite)) == 1
    raise RuntimeError(f"unsupported database {dialect}")  # pragma: no cover


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
            level_attempts=Candidate.level_attempts + 1,
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
    return rowcount(result)


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
