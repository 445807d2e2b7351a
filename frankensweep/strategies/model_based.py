"""Model-based search through Optuna (ask/tell): TPE or CMA-ES, in rounds of ``batch`` plans.

The study lives in the sweep's own database (``frankensweep-sweep-<id>``), so a restarted
service picks it up. Each candidate is one trial; before each round the finished candidates
are told (their loss, or FAIL), then ``batch`` trials are asked. A suggestion that is not a
plan of the space (infeasible, filtered) or was already taken is told FAIL and replaced by the
nearest untaken plan, enqueued so the study records the parameters actually evaluated.
"""

from __future__ import annotations

import itertools
import logging
import math
import warnings
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from frankensweep.core.status import CandidateStatus
from frankensweep.evals.registry import kind_required
from frankensweep.search import SpacePoint
from frankensweep.strategies.base import RoundPlan, SearchState, Strategy, StrategyError


class _ModelBasedSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=kind_required)
    budget: int = Field(ge=1, le=10**6, description="plans to evaluate at full fidelity")
    batch: int = Field(4, ge=1, le=256, description="plans asked per round")
    startup: int | None = Field(
        None, ge=1, description="random plans before the model guides (None: budget/3, <= 10)"
    )
    seed: int = Field(0, ge=0, le=2**31 - 1)


class TpeSpec(_ModelBasedSpec):
    kind: Literal["tpe"] = "tpe"


class CmaesSpec(_ModelBasedSpec):
    kind: Literal["cmaes"] = "cmaes"


#: a trial asked this long ago with no candidate is an orphan (its round was never stored)
ORPHAN_AFTER = timedelta(minutes=5)


def study_name(sweep_id: int) -> str:
    return f"frankensweep-sweep-{sweep_id}"


def search_params(points: Sequence[SpacePoint]) -> list[str]:
    """Parameters that vary, without copies (e.g. first_slice that always equals slice_size)."""
    names: list[str] = []
    columns: list[tuple] = []
    for name in points[0].params if points else []:
        column = tuple(p.params[name] for p in points)
        if len(set(column)) > 1 and column not in columns:
            names.append(name)
            columns.append(column)
    return names


class ModelBased(Strategy):
    """TPE or CMA-ES over the space's parameters (categorical plan index for explicit spaces)."""

    def check(self, evals: Sequence, space_kind: str, plans: int) -> None:
        super().check(evals, space_kind, plans)
        if self.kind == "cmaes" and space_kind == "explicit":
            raise StrategyError(
                "cmaes needs ordered parameters (an overlap, repeat, rys or interleave space); "
                "for a list of plans "
                "use tpe, random or halving"
            )

    def stored_plans(self, plans: int) -> int:
        return min(plans, self.spec.budget)

    def evaluations_to_come(self, reached: Sequence[int], top: int) -> dict[int, int]:
        """Trials are asked ``batch`` by batch until the budget (fewer if the space runs out)."""
        return {top: max(0, self.spec.budget - len(reached))}

    # -- Optuna ------------------------------------------------------------------------------
    def _startup(self) -> int:
        return self.spec.startup or max(1, min(10, self.spec.budget // 3))

    def _study(self, state: SearchState):
        import optuna

        optuna.logging.set_verbosity(logging.WARNING)
        seed = (self.spec.seed * 1_000_003 + state.round) % 2**32  # fresh each round, reproducible
        sampler: optuna.samplers.BaseSampler
        if self.kind == "tpe":
            with warnings.catch_warnings():  # constant_liar is marked experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                sampler = optuna.samplers.TPESampler(
                    seed=seed, n_startup_trials=self._startup(), constant_liar=True
                )
        else:
            sampler = optuna.samplers.CmaEsSampler(
                seed=seed,
                n_startup_trials=self._startup(),
                warn_independent_sampling=False,
            )
        storage = optuna.storages.RDBStorage(state.storage_url)
        study = optuna.create_study(
            study_name=study_name(state.sweep_id),
            storage=storage,
            sampler=sampler,
            direction="minimize",
            load_if_exists=True,
        )
        return study, storage

    def _distributions(self, points: Sequence[SpacePoint], explicit: bool) -> dict[str, Any]:
        """Integer parameters as ordered ranges; others (a scale, a model name) as choices."""
        from optuna.distributions import CategoricalDistribution, IntDistribution

        if explicit:
            return {"index": CategoricalDistribution(list(range(len(points))))}
        dists: dict[str, Any] = {}
        for name in search_params(points):
            values = sorted({p.params[name] for p in points})
            if not all(_is_int(v) for v in values):
                dists[name] = CategoricalDistribution(values)
                continue
            step = 0
            for a, b in itertools.pairwise(values):
                step = math.gcd(step, b - a)
            dists[name] = IntDistribution(values[0], values[-1], step=step or 1)
        return dists

    def observe(self, state: SearchState) -> None:
        import optuna

        known = {c.trial: c for c in state.candidates if c.trial is not None}
        study, storage = self._study(state)
        try:
            orphaned_before = datetime.now() - ORPHAN_AFTER  # Optuna stamps local naive times
            for trial in study.get_trials(deepcopy=False):
                if trial.state != optuna.trial.TrialState.RUNNING:
                    continue
                c = known.get(trial.number)
                if c is not None and c.status == CandidateStatus.done and c.loss is not None:
                    _tell(study, trial.number, c.loss)
                elif c is not None and c.status in (
                    CandidateStatus.failed,
                    CandidateStatus.cancelled,
                ):
                    _tell(study, trial.number, None)
                elif c is None and (state.finished or trial.datetime_start < orphaned_before):
                    # asked for a round never stored (a crash, or a lost race); while the
                    # search goes on, a young one may be a concurrent round being stored
                    _tell(study, trial.number, None)
        finally:
            storage.engine.dispose()

    def forget(self, sweep_id: int, storage_url: str) -> None:
        import optuna

        storage = optuna.storages.RDBStorage(storage_url)
        try:
            optuna.delete_study(study_name=study_name(sweep_id), storage=storage)
        except KeyError:  # never asked anything
            pass
        finally:
            storage.engine.dispose()

    def propose(self, state: SearchState) -> RoundPlan | None:
        import optuna
        from optuna.distributions import IntDistribution

        points = state.points
        taken = {c.plan for c in state.candidates}
        untaken = [p for p in points if str(p.plan) not in taken]
        wanted = min(self.spec.batch, self.spec.budget - len(state.candidates), len(untaken))
        if wanted <= 0:
            return None
        explicit = bool(points) and set(points[0].params) == {"index"}
        dists = self._distributions(points, explicit)
        names = list(dists)
        by_params = {self._key(p, names, explicit, i): p for i, p in enumerate(points)}
        ranges = {
            n: (d.high - d.low) or 1 if isinstance(d, IntDistribution) else 0
            for n, d in dists.items()
            if not explicit
        }
        index_of = {id(p): i for i, p in enumerate(points)}
        study, storage = self._study(state)
        plan = RoundPlan()
        try:
            for _ in range(wanted):
                trial = study.ask(dists)
                point = by_params.get(tuple(trial.params[n] for n in names))
                if point is None or str(point.plan) in taken:
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    point = min(untaken, key=lambda p: self._distance(p, trial.params, ranges))
                    study.enqueue_trial(
                        {"index": index_of[id(point)]}
                        if explicit
                        else {n: point.params[n] for n in names}
                    )
                    trial = study.ask(dists)
                taken.add(str(point.plan))
                untaken.remove(point)
                plan.add.append((point, state.top, trial.number))
        finally:
            storage.engine.dispose()
        plan.last = len(state.candidates) + len(plan.add) >= self.spec.budget or not untaken
        return plan

    @staticmethod
    def _key(point: SpacePoint, names: list[str], explicit: bool, index: int) -> tuple:
        return (index,) if explicit else tuple(point.params[n] for n in names)

    @staticmethod
    def _distance(point: SpacePoint, params: dict[str, Any], ranges: dict[str, int]) -> float:
        """Squared distance over the parameters, each integer scaled by its range (0: a choice,
        1 apart when different); an explicit space's plans are all as near as another."""
        if not ranges:
            return 0.0
        return sum(
            ((point.params[n] - params[n]) / r) ** 2 if r else float(point.params[n] != params[n])
            for n, r in ranges.items()
        )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _tell(study, number: int, loss: float | None) -> None:
    """Tell a trial its loss (None: failed); one told meanwhile by a concurrent round is fine."""
    import optuna

    try:
        if loss is None:
            study.tell(number, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(number, loss)
    except optuna.exceptions.UpdateFinishedTrialError:  # told between our read and write
        pass
    except ValueError as exc:
        if "Cannot tell a" not in str(exc):  # "... COMPLETE/FAIL trial": already told
            raise


class Tpe(ModelBased):
    kind = "tpe"


class Cmaes(ModelBased):
    kind = "cmaes"
