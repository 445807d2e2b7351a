"""Work units: evaluate a group of a sweep's candidates and store their scores.

The same code runs in the embedded worker thread and in Celery tasks; only dispatch differs.
A unit claims its candidates, runs the evals of each one's fidelity level (the sweep's own evals
at the top level; see ``strategies/fidelity.py``) cheapest first on the plans that have no stored
result for that (model, plan, eval settings) triple yet (the model being the base model and the
sweep's source models, ``SweepConfig.result_model``), upserts the results, and marks each
candidate done, or failed with its reason (an exception, a NaN score); the sweep goes on. When a
round's last unit ends, ``sweeps.rounds.advance`` stores the strategy's next round.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from torch import nn

from frankensweep.core.errors import one_line
from frankensweep.db import Candidate, CandidateStatus, Sweep, SweepStatus
from frankensweep.db.store import claim, results_for, upsert_result
from frankensweep.evals.prefix import prefix_order
from frankensweep.evals.registry import AnyEvalSpec, EvalContext, eval_key, get_eval
from frankensweep.search import Plan
from frankensweep.sweeps.config import sweep_config
from frankensweep.sweeps.status import finish_candidate, refresh_sweep
from frankensweep.worker.loading import MODELS, BaseModel, ModelCache, load_sources
from frankensweep.worker.views import build_view

__all__ = ["MODELS", "ModelCache", "UnitReport", "failure", "plan_units", "run_unit"]

log = logging.getLogger(__name__)


def plan_units(candidates: Sequence[Candidate], unit_size: int) -> list[list[int]]:
    """Group candidates into units of ``unit_size`` that share prefixes (depth-first order)."""
    ordered = sorted(candidates, key=lambda c: prefix_order(Plan.parse(c.plan)))
    ids = [c.id for c in ordered]
    return [ids[i : i + unit_size] for i in range(0, len(ids), unit_size)]


@dataclass
class UnitReport:
    claimed: int = 0
    evaluated: int = 0  # (plan, eval) pairs computed by this unit
    reused: int = 0  # (plan, eval) pairs already stored
    failed: int = 0


def _interrupt(exc: BaseException) -> bool:
    """A time limit (Celery's soft limit) ends the unit: it is not the plan's fault."""
    return type(exc).__name__ in ("SoftTimeLimitExceeded", "TimeLimitExceeded")


def _out_of_memory(exc: BaseException) -> bool:
    text = str(exc).lower()
    return (
        isinstance(exc, MemoryError)
        or type(exc).__name__ == "OutOfMemoryError"  # torch.OutOfMemoryError (CUDA, MPS)
        or "out of memory" in text
        or "can't allocate memory" in text  # torch's CPU allocator
    )


def failure(kind: str, exc: BaseException) -> str:
    """Why a plan failed, one line; out-of-memory errors say so (and free the CUDA cache)."""
    if not _out_of_memory(exc):
        return f"{kind}: {one_line(exc)}"
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return f"{kind}: out of memory: {one_line(exc)}"


@dataclass
class Unit:
    """What a unit evaluates once claimed: the models, and the plans of each eval to run."""

    model: str  # the base model, as named
    sources: dict[str, str]  # the source models its plans name: name -> as named
    result_model: str  # what its results are stored under
    plans: dict[int, Plan]  # candidate id -> plan
    work: list[tuple[AnyEvalSpec, dict[int, Plan]]]  # cheapest eval first
    failed: dict[int, str] = field(default_factory=dict)  # candidate id -> why


def _claim(
    session: Session, sweep: Sweep, candidate_ids: Sequence[int], claimant: str, max_attempts: int
) -> Unit | None:
    """Claim the unit's candidates (failing those whose worker died too often); what to run."""
    candidates = claim(session, candidate_ids, claimant)
    for c in [c for c in candidates if c.attempts > max_attempts]:
        # its worker died every time (out of memory, killed): stop sending it round
        finish_candidate(
            c,
            CandidateStatus.failed,
            f"gave up after {max_attempts} attempts: the worker evaluating it died each "
            "time (out of memory? see the worker's log)",
        )
        candidates.remove(c)
    refresh_sweep(session, sweep)
    session.commit()
    if not candidates:
        return None
    config = sweep_config(sweep)
    plans = {c.id: Plan.parse(c.plan) for c in candidates}
    # each candidate runs the evals of its fidelity level; all levels' evals cheapest first
    at_level = {c.id: config.level_of(c.fidelity) for c in candidates}
    work = [
        (spec, {cid: plan for cid, plan in plans.items() if at_level[cid] == lv})
        for lv in sorted(set(at_level.values()))
        for spec in config.levels[lv].evals
    ]
    work.sort(key=lambda item: get_eval(item[0].kind).cost)
    named = {name for plan in plans.values() for name in plan.models()}
    sources = {name: spec for name, spec in config.models.items() if name in named}
    return Unit(sweep.model, sources, config.result_model, plans, work)


def _finish(sessions: sessionmaker[Session], sweep_id: int, unit: Unit, claimant: str) -> None:
    """Mark what the unit still holds done, or failed with its reason; refresh the sweep."""
    with sessions() as s:
        sweep = s.get(Sweep, sweep_id)
        for c in s.scalars(select(Candidate).where(Candidate.id.in_(list(unit.plans)))):
            if c.status != CandidateStatus.running or c.claimed_by != claimant:
                continue
            if c.id in unit.failed:
                finish_candidate(c, CandidateStatus.failed, unit.failed[c.id])
            else:
                finish_candidate(c, CandidateStatus.done)
        if sweep is not None:
            refresh_sweep(s, sweep)
        s.commit()


def run_unit(
    sessions: sessionmaker[Session],
    sweep_id: int,
    candidate_ids: Sequence[int],
    claimant: str,
    models: ModelCache,
    device: str = "auto",
    dtype: str = "auto",
    memory_budget: int = 1 << 30,
    progress: Callable[[int], None] | None = None,
    max_attempts: int = 4,
) -> UnitReport:
    """Evaluate one unit; safe to run again (claims and result upserts are idempotent)."""
    report = UnitReport()
    with sessions() as s:
        sweep = s.get(Sweep, sweep_id)
        if sweep is None or sweep.status == SweepStatus.cancelled:
            return report
        unit = _claim(s, sweep, candidate_ids, claimant, max_attempts)
    if unit is None:
        return report
    report.claimed = len(unit.plans)
    try:
        base = models.get(unit.model, device, dtype)
    except Exception as exc:  # the model itself cannot be used: every candidate fails
        log.exception("cannot load %s", unit.model)
        unit.failed = dict.fromkeys(unit.plans, failure("loading the base model", exc))
    else:
        sources = _load_sources(unit, models, base, device, dtype)
        ctx = EvalContext(
            base=base.model,
            tokenizer=base.tokenizer,
            make_view=lambda plan: build_view(base.model, plan, sources),
            progress=progress,
            memory_budget=memory_budget,
        )
        for spec, group in unit.work:
            if _cancelled(sessions, sweep_id):
                return report
            _run_eval(sessions, unit, spec, group, ctx, report)
    _finish(sessions, sweep_id, unit, claimant)
    report.failed = len(unit.failed)
    return report


def _load_sources(
    unit: Unit, models: ModelCache, base: BaseModel, device: str, dtype: str
) -> dict[str, nn.Module]:
    """The source models the unit's plans name; a plan naming one that cannot be used fails."""
    sources: dict[str, nn.Module] = {}
    for name, spec in unit.sources.items():
        try:
            sources |= load_sources(models, base, {name: spec}, device, dtype)
        except Exception as exc:
            log.exception("cannot use source model %s (%s)", name, spec)
            why = failure("loading the source models", exc)
            for cid, plan in unit.plans.items():
                if name in plan.models():
                    unit.failed.setdefault(cid, why)
    return sources


def _cancelled(sessions: sessionmaker[Session], sweep_id: int) -> bool:
    with sessions() as s:
        sweep = s.get(Sweep, sweep_id)
        return sweep is None or sweep.status == SweepStatus.cancelled


def _to_compute(
    sessions: sessionmaker[Session], unit: Unit, key: str, plans: dict[int, Plan]
) -> dict[int, Plan]:
    """The plans of ``plans`` that have not failed and have no stored result for ``key``."""
    with sessions() as s:
        stored = results_for(s, unit.result_model, [p.digest for p in plans.values()], [key])
    return {
        cid: plan
        for cid, plan in plans.items()
        if cid not in unit.failed and (plan.digest, key) not in stored
    }


def _outcomes(spec: AnyEvalSpec, by_plan: dict[Plan, int], unit: Unit, ctx: EvalContext) -> dict:
    """Run one eval on the plans together; if that fails, plan by plan (the failing one fails)."""
    impl = get_eval(spec.kind)
    try:
        return impl.run(spec, list(by_plan), ctx)
    except Exception as exc:  # isolate the plan that fails; the others go on
        if _interrupt(exc):
            raise
        log.exception("%s failed on a unit; retrying plan by plan", spec.kind)
    outcomes = {}
    for plan, cid in by_plan.items():
        try:
            outcomes.update(impl.run(spec, [plan], ctx))
        except Exception as exc:
            if _interrupt(exc):
                raise
            unit.failed[cid] = failure(spec.kind, exc)
    return outcomes


def _run_eval(
    sessions: sessionmaker[Session],
    unit: Unit,
    spec: AnyEvalSpec,
    plans: dict[int, Plan],
    ctx: EvalContext,
    report: UnitReport,
) -> None:
    """Evaluate ``spec`` on the plans still without a result for it; store each result."""
    impl = get_eval(spec.kind)
    key = eval_key(spec)
    todo = _to_compute(sessions, unit, key, plans)
    report.reused += sum(1 for cid in plans if cid not in unit.failed) - len(todo)
    if not todo:
        return
    by_plan = {plan: cid for cid, plan in todo.items()}
    outcomes = _outcomes(spec, by_plan, unit, ctx)
    with sessions() as s:
        for plan, outcome in outcomes.items():
            cid = by_plan[plan]
            value = outcome.metrics.get(impl.metric)
            if value is None or not math.isfinite(value):
                unit.failed[cid] = f"{spec.kind}: {impl.metric} is {value} (not a finite number)"
                continue
            upsert_result(
                s,
                model=unit.result_model,
                plan=str(plan),
                plan_digest=plan.digest,
                eval_key=key,
                eval_kind=spec.kind,
                metrics=outcome.metrics,
                details=outcome.details,
                seconds=outcome.seconds,
            )
            report.evaluated += 1
        s.commit()
