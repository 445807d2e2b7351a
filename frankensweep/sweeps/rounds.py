"""Rounds on stored sweeps: start a sweep's first round, and advance it when a round ends.

``advance`` may be called by anyone at any time (the embedded worker after each round, every
Celery task after its unit, the API on restart): it acts only when the sweep's current round
has no pending or running candidate. A sweep is done only once ``advance`` finds its strategy
has nothing more to propose (after the strategy has seen every result: an Optuna study is
complete when its sweep is). The strategy proposes the next round outside any write
transaction (Optuna writes to the same database), then the round is stored in one transaction
guarded by compare-and-set on ``sweeps.round``, so concurrent callers store it once. A first
round may add nothing and wait (``RoundPlan.wait``): the reference, stored with every sweep, is
then the round, and the next round is proposed once it is evaluated; a later round that adds and
promotes nothing ends the search.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from frankensweep.db import Candidate, CandidateStatus, Sweep, SweepStatus
from frankensweep.db.store import results_for, rowcount, status_counts
from frankensweep.search import SpacePoint
from frankensweep.strategies import CandidateState, RoundPlan, SearchState
from frankensweep.sweeps.config import sweep_config
from frankensweep.sweeps.priors import stored_prior
from frankensweep.sweeps.status import FINAL_SWEEP, refresh_sweep, round_label

__all__ = ["advance", "begin", "forget", "search_state"]

log = logging.getLogger(__name__)


def _storage_url(session: Session) -> str:
    return session.get_bind().engine.url.render_as_string(hide_password=False)


def _stored(session: Session, sweep_id: int, populate_existing: bool = False) -> Sweep:
    """The sweep's row, read again from the database with ``populate_existing``."""
    sweep = session.get(Sweep, sweep_id, populate_existing=populate_existing)
    if sweep is None:
        raise LookupError(f"sweep {sweep_id} is not stored")
    return sweep


def search_state(
    session: Session, sweep: Sweep, round: int, points: Sequence[SpacePoint] | None = None
) -> SearchState:
    """What the strategy sees: every candidate but the reference, scored at its fidelity."""
    config = sweep_config(sweep)
    levels = list(config.levels)
    candidates = list(
        session.scalars(
            select(Candidate)
            .where(Candidate.sweep_id == sweep.id, Candidate.is_reference.is_(False))
            .order_by(Candidate.ordinal)
        )
    )
    stored = results_for(
        session, config.model_key, [c.digest for c in candidates], {lv.rank_key for lv in levels}
    )
    states = []
    for c in candidates:
        reached = config.level_of(c.fidelity)
        losses = {}
        for number, level in enumerate(levels[: reached + 1]):
            result = stored.get((c.digest, level.rank_key))
            loss = level.loss(result.metrics) if result else None
            if loss is not None:
                losses[number] = loss
        states.append(
            CandidateState(
                id=c.id,
                plan=c.plan,
                params=c.params,
                fidelity=c.fidelity or 0,
                status=c.status,
                trial=c.trial,
                loss=losses.get(reached),
                losses=losses,
            )
        )
    spec = config.strategy.prior
    return SearchState(
        sweep_id=sweep.id,
        round=round,
        levels=levels,
        candidates=states,
        storage_url=_storage_url(session),
        enumerate_points=(lambda: list(points)) if points is not None else config.points,
        prior=(
            stored_prior(session, config.model, config.num_layers, spec, config.load)
            if spec
            else None
        ),
    )


def _apply(session: Session, sweep: Sweep, plan: RoundPlan | None, round: int) -> list[int]:
    """Store a proposed round; return the ids of the candidates it will evaluate."""
    if not plan:
        sweep.search_finished = True
        refresh_sweep(session, sweep)
        return []
    ordinal: int = session.execute(
        select(func.coalesce(func.max(Candidate.ordinal), -1)).where(Candidate.sweep_id == sweep.id)
    ).scalar_one()
    added = []
    for point, fidelity, trial in plan.add:
        ordinal += 1
        added.append(
            Candidate(
                sweep_id=sweep.id,
                ordinal=ordinal,
                plan=str(point.plan),
                digest=point.plan.digest,
                params=point.params,
                fidelity=fidelity,
                round=round,
                trial=trial,
            )
        )
    session.add_all(added)
    changed = set(plan.promote) | set(plan.prune)
    for c in session.scalars(select(Candidate).where(Candidate.id.in_(changed))):
        if c.id in plan.promote:
            c.fidelity, c.round = plan.promote[c.id], round
            c.status, c.claimed_by, c.error = CandidateStatus.pending, None, None
            c.level_attempts = 0  # a new evaluation; ``attempts`` keeps counting every claim
            c.started_at = c.finished_at = None
        else:
            c.status, c.pruned_reason = CandidateStatus.pruned, plan.prune[c.id]
    session.flush()
    sweep.dispatched_at = None
    refresh_sweep(session, sweep)
    return [c.id for c in added] + list(plan.promote)


def forget(session: Session, sweep: Sweep) -> None:
    """Drop what the sweep's strategy keeps elsewhere (an Optuna study) once it is deleted."""
    sweep_config(sweep).strategy.forget(sweep.id, _storage_url(session))


def begin(session: Session, sweep_id: int, points: Sequence[SpacePoint]) -> int:
    """Store the first round of a stored sweep (``points``: its space, already enumerated)."""
    sweep = _stored(session, sweep_id)
    strategy = sweep_config(sweep).strategy
    state = search_state(session, sweep, 0, points)
    session.rollback()  # no transaction open while Optuna writes (SQLite allows one writer)
    plan = strategy.propose(state)
    ids = _apply(session, _stored(session, sweep_id), plan, 0)
    session.commit()
    return len(ids)


def advance(sessions: sessionmaker[Session], sweep_id: int) -> list[int] | None:
    """If the sweep's round is over, store the next; its candidate ids, or None if none."""
    with sessions() as s:
        sweep = s.get(Sweep, sweep_id)
        if sweep is None or sweep.status in (SweepStatus.cancelled, SweepStatus.failed):
            return None
        counts = status_counts(s, sweep_id)
        if counts[CandidateStatus.pending] or counts[CandidateStatus.running]:
            return None
        current = sweep.round
        strategy = sweep_config(sweep).strategy
        state = search_state(s, sweep, current + 1)
        s.rollback()
        plan = None
        if not sweep.search_finished:
            strategy.observe(state)
            plan = strategy.propose(state)
        if plan is not None and not (plan.add or plan.promote):  # waiting: round 0 only
            log.warning("sweep %s: round %d proposes nothing: the search ends", sweep_id, current)
            plan = None
        if not plan:  # the search is over: the strategy sees all of it, then the sweep is done
            state.finished = True
            strategy.observe(state)
            sweep = _stored(s, sweep_id, populate_existing=True)
            sweep.search_finished = True
            refresh_sweep(s, sweep)
            s.commit()
            return None
        cas = update(Sweep).where(
            Sweep.id == sweep_id,
            Sweep.round == current,
            Sweep.status.not_in(FINAL_SWEEP),  # a cancel committed meanwhile: no new round
        )
        won = rowcount(s.execute(cas.values(round=current + 1)))
        if not won:  # another caller stored this round, or the sweep was cancelled
            s.rollback()
            return None
        sweep = _stored(s, sweep_id, populate_existing=True)
        ids = _apply(s, sweep, plan, current + 1)
        s.commit()
        if ids:  # numbered from 1, as the command line and the dashboard number it
            log.info("sweep %s: %s stored, %d candidates", sweep_id, round_label(sweep), len(ids))
        return ids or None
