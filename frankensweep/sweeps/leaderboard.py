"""Ranked candidates of a sweep, scores merged across its evals, the base model as reference."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from frankensweep.core.errors import UserError
from frankensweep.db import FINISHED_SWEEP, Candidate, Result, Sweep
from frankensweep.db.store import results_for
from frankensweep.evals.registry import eval_key
from frankensweep.sweeps.config import sweep_config

__all__ = [
    "Leaderboard",
    "LeaderboardRow",
    "UnknownMetric",
    "candidate_scores",
    "leaderboard",
    "leaderboard_page_json",
    "positions",
]


class UnknownMetric(UserError, ValueError):
    """A metric that none of the sweep's evals reports."""

    loc = ("query", "metric")


class LeaderboardRow(BaseModel):
    rank: int | None = Field(description="None while the candidate has no score for the metric")
    candidate_id: int
    plan: str
    positions: int
    params: dict[str, Any]
    status: str
    scores: dict[str, float] = Field(description="at full fidelity; ranked rows have the metric")
    fidelity: int
    fidelity_label: str
    partial_scores: dict[str, float] = Field(
        description="below full fidelity: the metrics at the level reached (not comparable)"
    )
    pruned_reason: str | None


class Leaderboard(BaseModel):
    sweep_id: int
    metric: str
    higher_is_better: bool
    total: int = Field(description="ranked and unranked rows of the whole board")
    offset: int = Field(0, description="index of the first row returned in the whole board")
    reference: LeaderboardRow | None = Field(description="the base model itself (plan 0-N)")
    rows: list[LeaderboardRow] = Field(description="ranked rows first, then unranked")


def positions(plan: str) -> int:
    """Layers a stored (canonical) plan runs, without building a Plan: ``0-16,8-24`` -> 32
    (``8-16@b*0.5``: the model and scale after the range are left out)."""
    total = 0
    for piece in plan.split(","):
        start, _, end = piece.partition("@")[0].partition("*")[0].partition("-")
        total += int(end) - int(start)
    return total


Scores = dict[str, dict[str, float]]


def candidate_scores(
    session: Session, sweep: Sweep, candidates: list[Candidate]
) -> tuple[Scores, dict[str, list[Result]], Scores]:
    """Full-fidelity metrics by digest, every result row by digest, lower-level metrics by digest.

    A candidate below full fidelity (pruned, or still climbing) has no full scores; its metrics
    at the level it reached are its *partial* scores, comparable only within that level.
    """
    config = sweep_config(sweep)
    level_keys = [{eval_key(spec) for spec in level.evals} for level in config.levels]
    full_keys = level_keys[-1]
    stored = results_for(
        session, config.model_key, [c.digest for c in candidates], set().union(*level_keys)
    )
    level_of = {c.digest: config.level_of(c.fidelity) for c in candidates}
    scores: Scores = {}
    partial: Scores = {}
    rows: dict[str, list[Result]] = {}
    for (digest, key), result in sorted(stored.items()):
        rows.setdefault(digest, []).append(result)
        if key in full_keys:
            scores.setdefault(digest, {}).update(result.metrics)
        elif level_of[digest] < config.top and key in level_keys[level_of[digest]]:
            partial.setdefault(digest, {}).update(result.metrics)
    return scores, rows, partial


def leaderboard(session: Session, sweep: Sweep, metric: str | None) -> Leaderboard:
    """The whole board: ranked candidates first, then the rest (highest level first)."""
    config = sweep_config(sweep)
    metrics = config.metrics
    metric = metric or next(iter(metrics))
    if metric not in metrics:
        raise UnknownMetric(f"metric {metric!r} is not one of this sweep's: {', '.join(metrics)}")
    higher = metrics[metric]
    levels = config.levels
    candidates = list(
        session.scalars(
            select(Candidate).where(Candidate.sweep_id == sweep.id).order_by(Candidate.ordinal)
        )
    )
    scores, _, partial = candidate_scores(session, sweep, candidates)

    def row(c: Candidate, rank: int | None) -> LeaderboardRow:
        return LeaderboardRow(
            rank=rank,
            candidate_id=c.id,
            plan=c.plan,
            positions=positions(c.plan),
            params=c.params,
            status=c.status,
            scores=scores.get(c.digest, {}),
            fidelity=config.level_of(c.fidelity),
            fidelity_label=levels[config.level_of(c.fidelity)].label,
            partial_scores=partial.get(c.digest, {}),
            pruned_reason=c.pruned_reason,
        )

    def climbing(c: Candidate) -> tuple:
        """Unranked rows: highest level first, then by their score there."""
        level = config.level_of(c.fidelity)
        loss = levels[level].loss(partial.get(c.digest, {}))
        return (-level, loss is None, loss if loss is not None else 0.0, c.ordinal)

    reference = next((c for c in candidates if c.is_reference), None)
    others = [c for c in candidates if not c.is_reference]
    scored = [c for c in others if metric in scores.get(c.digest, {})]
    scored.sort(key=lambda c: (-1 if higher else 1) * scores[c.digest][metric])
    unscored = sorted((c for c in others if metric not in scores.get(c.digest, {})), key=climbing)
    return Leaderboard(
        sweep_id=sweep.id,
        metric=metric,
        higher_is_better=higher,
        total=len(others),
        reference=row(reference, None) if reference else None,
        rows=[row(c, i) for i, c in enumerate(scored, 1)] + [row(c, None) for c in unscored],
    )


# -- pages of cached boards ----------------------------------------------------------------------

#: boards kept per process (least recently used dropped first), and JSON pages kept per board
CACHE_SIZE = 16
PAGES_PER_BOARD = 64
_cache: OrderedDict[tuple[Any, ...], tuple[Leaderboard, dict[tuple[int, int], bytes]]] = (
    OrderedDict()
)
_cache_lock = threading.Lock()


def board_stamp(session: Session, sweep: Sweep) -> tuple:
    """What a board depends on: a finished sweep's candidates no longer change (no query);
    an unfinished one's are summed up in one aggregate query over its candidates."""
    stamp: tuple = (sweep.created_at, sweep.status, sweep.finished_at, sweep.round)
    if sweep.status in FINISHED_SWEEP:
        return stamp
    summary = session.execute(
        select(
            func.count(),
            func.max(Candidate.started_at),
            func.max(Candidate.finished_at),
            func.sum(Candidate.attempts),
            func.sum(Candidate.fidelity),
        ).where(Candidate.sweep_id == sweep.id)
    ).one()
    return (*stamp, *summary)


def leaderboard_page_json(
    session: Session, sweep: Sweep, metric: str | None, limit: int, offset: int = 0
) -> bytes:
    """The JSON of rows ``offset .. offset + limit`` of the board (ranks stay the board's own).

    The whole board is computed once per :func:`board_stamp` and kept with its pages' JSON
    (LRU, per process): many clients polling a large sweep cost a lookup each, not a ranking.
    """
    key = (sweep.id, metric, board_stamp(session, sweep))
    with _cache_lock:  # one computation at a time; hits wait only while a miss computes
        entry = _cache.get(key)
        if entry is None:
            entry = _cache[key] = (leaderboard(session, sweep, metric), {})
            while len(_cache) > CACHE_SIZE:
                _cache.popitem(last=False)
        else:
            _cache.move_to_end(key)
        board, pages = entry
        page = pages.get((limit, offset))
        if page is None:
            if len(pages) >= PAGES_PER_BOARD:
                pages.clear()
            rows = board.rows[offset : offset + limit]
            text = board.model_copy(update={"rows": rows, "offset": offset}).model_dump_json()
            page = pages[(limit, offset)] = text.encode()
    return page
