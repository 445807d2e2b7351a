"""Work units: evaluate a group of a sweep's candidates and store their scores.

The same code runs in the embedded worker thread and in Celery tasks; only dispatch differs.
A unit claims its candidates, runs the evals of each one's fidelity level (the sweep's own evals
at the top level; see ``strategies/fidelity.py``) cheapest first on the plans that have no stored
result for that (model, plan, eval settings) triple yet, upserts the results, and marks each
candidate done, or failed with its reason (an exception, a NaN score); the sweep goes on. When a
round's last unit ends, ``strategies.rounds.advance`` stores the strategy's next round.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from frankensweep.db import Candidate, CandidateStatus, Sweep, SweepStatus
from frankensweep.db.store import (
    claim,
    finish_candidate,
    refresh_sweep,
    results_for,
    upsert_result,
)
from frankensweep.evals.registry import EvalContext, eval_key, get_eval
from frankensweep.search import Plan
from frankensweep.strategies.rounds import sweep_levels
from frankensweep.worker.models import BaseModel, load_base_model
from frankensweep.worker.views import build_view

log = logging.getLogger(__name__)


class ModelCache:
    """Base models loaded once per process, by (spec, device, dtype)."""

    def __init__(self) -> None:
        self._models: dict[tuple[str, str, str], BaseModel] = {}
        self._lock = threading.Lock()

    def get(self, spec: str, device: str = "auto", dtype: str = "auto") -> BaseModel:
        key = (spec, device, dtype)
        with self._lock:
            if key not in self._models:
                log.info("loading base model %s", spec)
                self._models[key] = load_base_model(spec, device=device, dtype=dtype)
            return self._models[key]


#: the process's models: a worker process (or the embedded server) loads each base model once
MODELS = ModelCache()


def plan_units(candidates: Sequence[Candidate], unit_size: int) -> list[list[int]]:
    """Group candidates into units of ``unit_size`` that share prefixes (depth-first order)."""
    ordered = sorted(candidates, key=lambda c: Plan.parse(c.plan).layers())
    ids = [c.id for c in ordered]
    return [ids[i : i + unit_size] for i in range(0, len(ids), unit_size)]


@dataclass
class UnitReport:
    claimed: int = 0
    evaluated: int = 0  # (plan, eval) pairs computed by this unit
    reused: int = 0  # (plan, eval) pairs already stored
    failed: int = 0


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip()


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
        return f"{kind}: {_one_line(exc)}"
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return f"{kind}: out of memory: {_one_line(exc)}"


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
        candidates = claim(s, candidate_ids, claimant)
        for c in [c for c in candidates if c.attempts > max_attempts]:
            # its worker died every time (out of memory, killed): stop sending it round
            finish_candidate(
                s,
                c,
                CandidateStatus.failed,
                f"gave up after {max_attempts} attempts: the worker evaluating it died each "
                "time (out of memory? see the worker's log)",
            )
            candidates.remove(c)
        report.claimed = len(candidates)
        if not candidates:
            refresh_sweep(s, sweep)
            s.commit()
            return report
        refresh_sweep(s, sweep)
        s.commit()
        model_spec = sweep.model
        levels = sweep_levels(sweep)
        plans = {c.id: Plan.parse(c.plan) for c in candidates}
        # each candidate runs the evals of its fidelity level; all levels' evals cheapest first
        at_level = {c.id: min(c.fidelity or 0, len(levels) - 1) for c in candidates}
        work = [
            (spec, {cid: plan for cid, plan in plans.items() if at_level[cid] == lv})
            for lv in sorted(set(at_level.values()))
            for spec in levels[lv].evals
        ]
        work.sort(key=lambda item: get_eval(item[0].kind).cost)
    failed: dict[int, str] = {}
    try:
        base = models.get(model_spec, device, dtype)
    except Exception as exc:  # the model itself cannot be used: every candidate fails
        log.exception("cannot load %s", model_spec)
        failed = dict.fromkeys(plans, failure("loading the base model", exc))
    else:
        ctx = EvalContext(
            base=base.model,
            tokenizer=base.tokenizer,
            make_view=lambda plan: build_view(base.model, plan),
            progress=progress,
            memory_budget=memory_budget,
        )
        for spec, group in work:
            if _cancelled(sessions, sweep_id):
                return report
            _run_eval(sessions, model_spec, spec, group, failed, ctx, report)
    with sessions() as s:
        sweep = s.get(Sweep, sweep_id)
        for c in s.query(Candidate).filter(Candidate.id.in_(list(plans))):
            if c.status != CandidateStatus.running or c.claimed_by != claimant:
                continue
            if c.id in failed:
                finish_candidate(s, c, CandidateStatus.failed, failed[c.id])
            else:
                finish_candidate(s, c, CandidateStatus.done)
        if sweep is not None:
            refresh_sweep(s, sweep)
        s.commit()
    report.failed = len(failed)
    return report


def _cancelled(sessions: sessionmaker[Session], sweep_id: int) -> bool:
    with sessions() as s:
        sweep = s.get(Sweep, sweep_id)
        return sweep is None or sweep.status == SweepStatus.cancelled


def _run_eval(sessions, model_spec, spec, plans, failed, ctx, report) -> None:
    impl = get_eval(spec.kind)
    key = eval_key(spec)
    with sessions() as s:
        stored = results_for(s, model_spec, [p.digest for p in plans.values()], [key])
    todo = {
        cid: plan
        for cid, plan in plans.items()
        if cid not in failed and (plan.digest, key) not in stored
    }
    report.reused += sum(1 for cid in plans if cid not in failed) - len(todo)
    if not todo:
        return
    by_plan = {plan: cid for cid, plan in todo.items()}
    try:
        outcomes = impl.run(spec, list(by_plan), ctx)
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
                failed[cid] = failure(spec.kind, exc)
    with sessions() as s:
        for plan, outcome in outcomes.items():
            cid = by_plan[plan]
            value = outcome.metrics.get(impl.metric)
            if value is None or not math.isfinite(value):
                failed[cid] = f"{spec.kind}: {impl.metric} is {value} (not a finite number)"
                continue
            upsert_result(
                s,
                model=model_spec,
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
