"""Turn a submitted sweep into stored candidates, validating everything before storing anything."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy.orm import Session

from frankensweep.api.paths_check import check_paths
from frankensweep.api.schemas import ExplicitSpaceIn, SweepCreate
from frankensweep.core.config import Settings
from frankensweep.db import Candidate, Sweep
from frankensweep.evals.registry import get_eval
from frankensweep.search import (
    ExplicitSpace,
    Filters,
    InfeasibleSpaceError,
    Plan,
    PlanError,
    RecipeError,
    SpacePoint,
    enumerate_space,
    recipe_to_plan,
    space_from_spec,
)
from frankensweep.strategies import FidelityError, StrategyError, make_strategy
from frankensweep.strategies.rounds import begin


class SubmissionError(ValueError):
    """A field of the submission is wrong; ``loc`` names it, the message says what to change."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc


@lru_cache(maxsize=64)
def _depth(spec: str, mtime: float | None) -> int:
    from frankensweep.worker.models import read_num_layers

    return read_num_layers(spec)


def model_depth(spec: str) -> int:
    """Depth N of the named model from its config (cached per file version)."""
    from frankensweep.worker.models import ModelLoadError

    path = Path(spec).expanduser()
    mtime = path.stat().st_mtime if path.exists() else None
    try:
        return _depth(spec, mtime)
    except ModelLoadError as exc:
        raise SubmissionError(("body", "model"), str(exc)) from None


def _space(payload: SweepCreate, num_layers: int):
    space_in = payload.space
    if isinstance(space_in, ExplicitSpaceIn):
        plans: list[Plan] = []
        try:
            plans += [Plan.parse(text) for text in space_in.plans]
        except PlanError as exc:
            raise SubmissionError(("body", "space", "plans"), str(exc)) from None
        for i, text in enumerate(space_in.recipes):
            try:
                plans.append(recipe_to_plan(text).plan)
            except RecipeError as exc:
                raise SubmissionError(("body", "space", "recipes", i), str(exc)) from None
        if not plans:
            raise SubmissionError(("body", "space"), "an explicit space needs plans or recipes")
        try:
            return ExplicitSpace(plans, num_layers=num_layers)
        except PlanError as exc:
            raise SubmissionError(("body", "space", "plans"), str(exc)) from None
    spec = space_in.model_dump(exclude={"filters"}, exclude_none=True)
    try:
        return space_from_spec(spec, num_layers=num_layers)
    except (ValueError, PlanError) as exc:
        raise SubmissionError(("body", "space"), str(exc)) from None


class Submission(NamedTuple):
    """A validated sweep (only its reference candidate yet), the space's counts, its plans."""

    sweep: Sweep
    summary: dict[str, Any]
    points: list[SpacePoint]


def build_sweep(payload: SweepCreate, settings: Settings) -> Submission:
    """Validate everything about a submission; nothing is stored (see ``store_sweep``)."""
    check_paths(payload, settings)  # before any file is opened: only names under the path roots
    num_layers = model_depth(payload.model)
    space = _space(payload, num_layers)
    if space.size > settings.max_plans_per_sweep * 20:
        raise SubmissionError(
            ("body", "space"),
            f"the space has {space.size} points, too many to enumerate for a sweep capped at "
            f"{settings.max_plans_per_sweep} plans: narrow the ranges",
        )
    filters_in = payload.space.filters
    filters = Filters.from_dict(filters_in.model_dump(exclude_none=True) if filters_in else None)
    try:
        result = enumerate_space(space, filters)
    except InfeasibleSpaceError as exc:
        raise SubmissionError(("body", "space"), str(exc)) from None
    if not result.points:
        raise SubmissionError(
            ("body", "space"), f"no plan is left to evaluate: {result.summary()}; relax the filters"
        )
    strategy = make_strategy(payload.strategy)
    stored = strategy.stored_plans(result.kept)
    if stored > settings.max_plans_per_sweep:
        raise SubmissionError(
            ("body", "space"),
            f"the space gives {result.kept} plans, the {strategy.kind} strategy would evaluate "
            f"{stored}, over the cap of {settings.max_plans_per_sweep} "
            "(FRANKENSWEEP_MAX_PLANS_PER_SWEEP): narrow the ranges, add filters or give the "
            "strategy a budget",
        )
    for i, spec in enumerate(payload.evals):
        impl = get_eval(spec.kind)
        try:
            impl.check(spec)
        except ValueError as exc:
            raise SubmissionError(("body", "evals", i), str(exc)) from None
        tokens = getattr(spec, "tokens", None)
        if tokens is not None and tokens > settings.max_eval_tokens:
            raise SubmissionError(
                ("body", "evals", i, "tokens"),
                f"{tokens} tokens is over the cap of {settings.max_eval_tokens} "
                "(FRANKENSWEEP_MAX_EVAL_TOKENS)",
            )
    try:
        strategy.check(payload.evals, space.kind, result.kept)
    except (StrategyError, FidelityError) as exc:
        raise SubmissionError(("body", "strategy"), str(exc)) from None
    sweep = Sweep(
        name=payload.name,
        model=payload.model,
        num_layers=num_layers,
        space={
            **space.to_spec(),
            **({"filters": filters.to_dict()} if filters.active else {}),
        },
        evals=[spec.model_dump(mode="json") for spec in payload.evals],
        strategy=strategy.spec.model_dump(mode="json"),
    )
    top = len(strategy.levels(payload.evals)) - 1
    base = Plan.base(num_layers)
    sweep.candidates = [
        Candidate(
            ordinal=0,
            plan=str(base),
            digest=base.digest,
            params={},
            is_reference=True,
            fidelity=top,
        )
    ]
    points = [p for p in result.points if p.plan.layers() != base.layers()]
    summary = {
        "size": result.size,
        "kept": result.kept,
        "infeasible": result.infeasible,
        "duplicates": result.duplicates,
        "removed_by_filter": result.removed_by_filter,
        "summary": result.summary(),
    }
    if stored < result.kept:
        summary["strategy"] = f"{strategy.kind} evaluates at most {stored} of {result.kept} plans"
    return Submission(sweep, summary, points)


def store_sweep(session: Session, submission: Submission) -> int:
    """Store the sweep and its strategy's first round; the number of candidates stored."""
    session.add(submission.sweep)
    session.commit()
    try:
        return 1 + begin(session, submission.sweep.id, submission.points)
    except Exception:  # no half-made sweep: it is stored whole or not at all
        session.rollback()
        session.delete(session.get(Sweep, submission.sweep.id))
        session.commit()
        raise
