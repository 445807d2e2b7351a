"""Work units: evaluate a group of a sweep's candidates and store their scores.

The same code runs in the embedded worker thread and in Celery tasks; only dispatch differs.
A unit claims its candidates, runs the evals of each one's fidelity level (the sweep's own evals
at the top level; see ``strategies/fidelity.py``) cheapest first on the plans that have no stored
result for that (model, plan, eval settings) triple yet (the model being the base model and the
sweep's source models: ``SweepConfig.model_key``), upserts the results, and marks each
candidate done, or failed with its reason (an exception, a NaN score); the sweep goes on. When a
round's last unit ends, ``sweeps.rounds.advance`` stores the strategy's next round.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from torch import nn

from frankensweep.core.errors import UserError, one_line
from frankensweep.db import Candidate, CandidateStatus, Sweep, SweepStatus
from frankensweep.db.store import claim, lock_sweep, results_for, upsert_result
from frankensweep.evals.prefix import prefix_order
from frankensweep.evals.registry import AnyEvalSpec, EvalContext, Outcome, eval_key, get_eval
from frankensweep.models import model_fingerprint
from frankensweep.search import Plan
from frankensweep.strategies.fidelity import describe
from frankensweep.sweeps.config import SweepConfig, current_model_key, sweep_config
from frankensweep.sweeps.status import finish_claimed, refresh_sweep
from frankensweep.worker.loading import MODELS, BaseModel, ModelCache, load_sources
from frankensweep.worker.prior import prior_of
from frankensweep.worker.views import build_view, decoder_stack

__all__ = [
    "MODELS",
    "ModelCache",
    "StopCheck",
    "UnitReport",
    "UnitStopped",
    "failure",
    "plan_units",
    "run_unit",
    "watched_view",
]

log = logging.getLogger(__name__)


def plan_units(
    candidates: Sequence[Candidate], unit_size: int, workers: int = 1
) -> list[list[int]]:
    """Group candidates into units that share prefixes (depth-first order): at most
    ``unit_size`` each, and at least ``workers`` units when there are that many candidates, so
    that a small round still spreads over the workers that are alive."""
    ordered = sorted(candidates, key=lambda c: prefix_order(Plan.parse(c.plan)))
    ids = [c.id for c in ordered]
    size = max(1, min(unit_size, math.ceil(len(ids) / max(workers, 1))))
    return [ids[i : i + size] for i in range(0, len(ids), size)]


@dataclass
class UnitReport:
    claimed: int = 0
    evaluated: int = 0  # (plan, eval) pairs computed by this unit
    reused: int = 0  # (plan, eval) pairs already stored
    failed: int = 0
    stopped: bool = False  # the sweep was cancelled or deleted meanwhile


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


class UnitStopped(BaseException):
    """The unit's sweep was cancelled or deleted: stop at once, store nothing more.

    A BaseException, like KeyboardInterrupt, so no ``except Exception`` on the way (lm-eval's,
    the retry plan by plan here) mistakes it for a plan's failure."""


class StopCheck:
    """Called between layers of work: raises :class:`UnitStopped` once the sweep is cancelled
    or deleted, or none of the unit's candidates is still held. Reads the database at most every
    ``interval`` seconds, so a cancelled unit stops within about that much compute."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        sweep_id: int,
        ids: Sequence[int],
        claimant: str,
        interval: float = 1.0,
    ) -> None:
        self.sessions, self.sweep_id, self.ids, self.claimant = sessions, sweep_id, ids, claimant
        self.interval = interval
        self._next = time.monotonic() + interval

    def __call__(self, *_args: object) -> None:
        if time.monotonic() >= self._next:
            self.now()

    def now(self) -> None:
        """Check at once (between evals)."""
        self._next = time.monotonic() + self.interval
        if self.stopped():
            raise UnitStopped(f"sweep {self.sweep_id} was cancelled or deleted")

    def stopped(self) -> bool:
        with self.sessions() as s:
            sweep = s.get(Sweep, self.sweep_id)
            if sweep is None or sweep.status == SweepStatus.cancelled:
                return True
            held = select(func.count()).where(
                Candidate.id.in_(list(self.ids)),
                Candidate.status == CandidateStatus.running,
                Candidate.claimed_by == self.claimant,
            )
            return s.execute(held).scalar_one() == 0


def watched_view(
    base: nn.Module,
    plan: Plan,
    stop: Callable[..., None],
    sources: dict[str, nn.Module] | None = None,
) -> nn.Module:
    """A view of ``plan`` whose every position first calls ``stop`` (a forward pre-hook on the
    view's own layer objects: the base model's layers get no hook)."""
    view = build_view(base, plan, sources)
    for layer in decoder_stack(view)[1]:
        layer.register_forward_pre_hook(stop)
    return view


@dataclass
class Unit:
    """What a unit evaluates once claimed: the models, and the plans of each eval to run."""

    config: SweepConfig
    plans: dict[int, Plan]  # candidate id -> plan
    work: list[tuple[AnyEvalSpec, dict[int, Plan]]]  # cheapest eval first
    sources: dict[str, str] = field(default_factory=dict)  # source models named: name -> spec
    failed: dict[int, str] = field(default_factory=dict)  # candidate id -> why
    # EQ-Bench's ``auto`` batch: what the memory planner picked at submission for the sweep's
    # deepest plan (so it fits every plan); None for sweeps stored before the planner
    eq_batch: int | None = None

    @property
    def model(self) -> str:
        return self.config.model


def _claim(
    session: Session, sweep: Sweep, candidate_ids: Sequence[int], claimant: str, max_attempts: int
) -> Unit | None:
    """Claim the unit's candidates (failing those whose worker died too often); what to run."""
    candidates = claim(session, candidate_ids, claimant)
    tired = [c.id for c in candidates if c.level_attempts > max_attempts]
    # their worker died every time (out of memory, killed): stop sending them round
    finish_claimed(
        session,
        tired,
        claimant,
        CandidateStatus.failed,
        f"gave up after {max_attempts} attempts: the worker evaluating it died each "
        "time (out of memory? see the worker's log)",
    )
    candidates = [c for c in candidates if c.id not in tired]
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
    eq_batch = (sweep.memory or {}).get("eq_bench_batch")
    return Unit(
        config, plans, work, sources, eq_batch=eq_batch if isinstance(eq_batch, int) else None
    )


def _finish(sessions: sessionmaker[Session], sweep_id: int, unit: Unit, claimant: str) -> None:
    """Mark what the unit still holds done, or failed with its reason; refresh the sweep."""
    with sessions() as s:
        for reason in set(unit.failed.values()):
            ids = [cid for cid, why in unit.failed.items() if why == reason]
            finish_claimed(s, ids, claimant, CandidateStatus.failed, reason)
        done = [cid for cid in unit.plans if cid not in unit.failed]
        finish_claimed(s, done, claimant, CandidateStatus.done)
        sweep = s.get(Sweep, sweep_id)
        if sweep is not None:
            refresh_sweep(s, sweep)
        s.commit()


def _changed_models(config: SweepConfig) -> dict[str | None, str]:
    """The models (None: the base model; else a source model's name) whose files no longer
    match what the sweep's key digests, each with why (their scores would be stored under the
    old files' key)."""
    if not config.fingerprinted:
        return {}
    if config.identity is None:  # stored before identities: the whole key is compared
        try:
            same = current_model_key(config.model, config.models, config.load) == config.model_key
        except UserError as exc:
            return {None: f"loading the base model: {exc}"}
        return {} if same else {None: f"loading the base model: {_CHANGED}"}
    models: dict[str | None, tuple[str, str]] = {None: (config.model, config.identity["weights"])}
    for name, entry in (config.identity.get("sources") or {}).items():
        models[name] = (entry["model"], entry["weights"])
    changed: dict[str | None, str] = {}
    for name, (spec, weights) in models.items():
        what = "the base model" if name is None else f"source model {name}"
        try:
            if model_fingerprint(spec) != weights:
                changed[name] = f"loading {what}: {_CHANGED}"
        except UserError as exc:
            changed[name] = f"loading {what}: {exc}"
    return changed


#: why a model whose files changed since submission is not evaluated
_CHANGED = (
    "its files changed after the sweep was submitted (its scores would be stored under the old "
    "files' key): submit a new sweep"
)


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
    activity: Callable[[str], None] | None = None,
) -> UnitReport:
    """Evaluate one unit; safe to run again (claims and result upserts are idempotent).

    ``activity`` hears what the unit evaluates next (the worker's heartbeat shows it).
    """
    report = UnitReport()
    with sessions() as s:
        sweep = s.get(Sweep, sweep_id)
        if sweep is None or sweep.status == SweepStatus.cancelled:
            return report
        unit = _claim(s, sweep, candidate_ids, claimant, max_attempts)
    if unit is None:
        return report
    report.claimed = len(unit.plans)
    stop = StopCheck(sessions, sweep_id, list(unit.plans), claimant)
    try:
        _evaluate(
            sessions, unit, models, device, dtype, memory_budget, progress, stop, report, activity
        )
    except UnitStopped:
        log.info("sweep %s: unit of %d stopped (cancelled)", sweep_id, len(unit.plans))
        report.stopped = True
        return report
    _finish(sessions, sweep_id, unit, claimant)
    report.failed = len(unit.failed)
    return report


def _evaluate(
    sessions: sessionmaker[Session],
    unit: Unit,
    models: ModelCache,
    device: str,
    dtype: str,
    memory_budget: int,
    progress: Callable[[int], None] | None,
    stop: StopCheck,
    report: UnitReport,
    activity: Callable[[str], None] | None = None,
) -> None:
    """Load the model (once per process, as the sweep's load options say; sweeps stored before
    load options: ``dtype``) and run the unit's evals, cheapest first (``activity`` hears each
    one before it runs)."""
    changed = _changed_models(unit.config)
    if None in changed:
        unit.failed = dict.fromkeys(unit.plans, changed[None])
        return
    for cid, plan in unit.plans.items():  # a changed source model fails the plans naming it
        why = next((changed[m] for m in plan.models() if m in changed), None)
        if why is not None:
            unit.failed[cid] = why
    unit.sources = {name: spec for name, spec in unit.sources.items() if name not in changed}
    try:
        # the cache keeps a model per version of its files (a sweep's key also covers sources)
        key = model_fingerprint(unit.model)
        base = models.get(unit.model, device, dtype, key, unit.config.load)
    except Exception as exc:  # the model itself cannot be used: every candidate fails
        log.exception("cannot load %s", unit.model)
        unit.failed = dict.fromkeys(unit.plans, failure("loading the base model", exc))
        return
    sources = _load_sources(unit, models, base, device, dtype)
    ctx = EvalContext(
        base=base.model,
        tokenizer=base.tokenizer,
        make_view=lambda plan: watched_view(base.model, plan, stop, sources),
        progress=progress,
        memory_budget=memory_budget,
        largest_batch=(lambda _plan, _tokens: unit.eq_batch) if unit.eq_batch else None,
    )
    _ensure_prior(sessions, unit, base)
    for spec, group in unit.work:
        stop.now()
        if activity is not None:
            activity(f"{describe(spec)}: {len(group)} plans")
        _run_eval(sessions, unit, spec, group, ctx, report, stop.claimant)


def _ensure_prior(sessions: sessionmaker[Session], unit: Unit, base: BaseModel) -> None:
    """With the reference, the layer prior the sweep's strategy asks for (computed once per
    model); a failure is logged and the strategy goes on without it."""
    spec = unit.config.strategy.prior
    reference = Plan.base(unit.config.num_layers)
    if spec is None or reference not in unit.plans.values():
        return
    try:
        prior_of(sessions, base, spec, unit.config.load)
    except Exception:
        log.exception("sweep %s: the layer prior could not be computed", unit.config.sweep_id)


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


def _to_compute(
    sessions: sessionmaker[Session], unit: Unit, key: str, plans: dict[int, Plan]
) -> dict[int, Plan]:
    """The plans of ``plans`` that have not failed and have no stored result for ``key``."""
    with sessions() as s:
        stored = results_for(s, unit.config.model_key, [p.digest for p in plans.values()], [key])
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
    claimant: str,
) -> None:
    """Evaluate ``spec`` on the plans still without a result for it; store each result."""
    impl = get_eval(spec.kind)
    key = eval_key(spec)
    todo = _to_compute(sessions, unit, key, plans)
    report.reused += sum(1 for cid in plans if cid not in unit.failed) - len(todo)
    if not todo:
        return
    try:
        impl.check_unchanged(spec)  # new data would be stored under the old data's key
    except UserError as exc:
        unit.failed.update(dict.fromkeys(todo, f"{spec.kind}: {exc}"))
        return
    by_plan = {plan: cid for cid, plan in todo.items()}
    outcomes = _outcomes(spec, by_plan, unit, ctx)
    _store(sessions, unit, spec, key, by_plan, outcomes, report, claimant)


def _store(
    sessions: sessionmaker[Session],
    unit: Unit,
    spec: AnyEvalSpec,
    key: str,
    by_plan: dict[Plan, int],
    outcomes: dict[Plan, Outcome],
    report: UnitReport,
    claimant: str,
) -> None:
    """Store the results of candidates the unit still holds, under the sweep's row lock: a
    cancel answered before this transaction means nothing is stored (UnitStopped)."""
    impl = get_eval(spec.kind)
    with sessions() as s:
        if lock_sweep(s, unit.config.sweep_id) in (None, SweepStatus.cancelled):
            s.rollback()
            raise UnitStopped(f"sweep {unit.config.sweep_id} was cancelled or deleted")
        held = set(
            s.scalars(
                select(Candidate.id).where(
                    Candidate.id.in_(list(by_plan.values())),
                    Candidate.status == CandidateStatus.running,
                    Candidate.claimed_by == claimant,
                )
            )
        )
        for plan, outcome in outcomes.items():
            cid = by_plan[plan]
            value = outcome.metrics.get(impl.metric)
            if value is None or not math.isfinite(value):
                unit.failed[cid] = f"{spec.kind}: {impl.metric} is {value} (not a finite number)"
                continue
            odd = sorted(k for k, v in outcome.metrics.items() if not math.isfinite(v))
            if odd:  # JSON has no NaN: a stored score is finite throughout
                unit.failed[cid] = f"{spec.kind}: {', '.join(odd)} not a finite number"
                continue
            if cid not in held:  # taken from this unit meanwhile (cancelled, handed on)
                continue
            upsert_result(
                s,
                model=unit.config.model_key,
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
