"""Surrogate search: a regressor over plan structure picks, round by round, the plans worth a look.

Features of a plan (:class:`Features`), one row per plan: for every model the plans name (the
base model first) and every source layer, how many positions run that layer of that model; when
the space has scales, per layer the scale mass ``sum(1 - scale)`` of its scaled positions; with a
layer prior (``evals/prior.py``), the plan's prior score. Targets: the ranking loss at full
fidelity, its logarithm when every loss is positive (perplexities), standardized.

The regressor is scikit-learn's ``GaussianProcessRegressor`` (constant x Matern 5/2 kernel on
the features, with a white-noise term and a linear term on the prior score when there is one;
hyperparameters fitted by maximum likelihood each round). It was chosen over a random forest and
quantile gradient boosting by held-out rank correlation and search cost on a ground truth kept
apart from the benchmark's (SmolLM2's single-block repeat space scored on pydoc_data.topics; the
benchmark, docs/benchmarks.md section ``search_rys``, scores it on WikiText-2).

Rounds:

- round 0: with ``prior`` set and no prior stored for the model yet, the round only waits for the
  reference (whose worker computes and stores the prior); then ``initial`` plans: the lowest prior
  scores first with a prior, else a seeded random draw;
- every later round: the model is fitted on the plans scored at full fidelity and ``batch`` plans
  are chosen by expected improvement per unit of cost (positions x tokens) over the *pool*: every
  untaken plan of a space of at most ``pool`` plans; in a larger space a seeded random draw of
  ``pool`` untaken plans plus, around the ``batch`` best of that draw, their neighbours in the
  space's enumeration order (spaces enumerate lexicographically by their parameters, so these
  share all but the last parameters). Within a round each chosen plan is added to the model as if
  it scored its predicted mean (the "kriging believer"), so a batch spreads out. No plan is
  proposed twice.
- with ``rungs > 1`` (halving's ladder, ``fidelity.py``) new plans start at the cheapest level,
  where the model is fitted and the acquisition runs; a plan goes up one level once its loss
  ranks in the best ``1 / eta`` of the plans scored at its level (successive halving, run
  asynchronously); every round promotes all that qualify, and once the budget is spent, rounds
  promote until none qualifies.

The search ends when ``budget`` plans are stored or none is left. What the strategy knows lives
in the sweep's database: its candidates and their stored scores (and the prior, a stored result);
each round is a deterministic function of them, the seed and the round number, so a restarted
service proposes exactly what an uninterrupted one would.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from frankensweep.core.status import CandidateStatus
from frankensweep.evals.prior import LayerPrior, PriorSpec
from frankensweep.evals.registry import kind_required
from frankensweep.search import Plan, SpacePoint
from frankensweep.strategies.base import CandidateState, RoundPlan, SearchState, Strategy
from frankensweep.strategies.fidelity import Level, ladder

__all__ = ["Features", "Surrogate", "SurrogateSpec"]

#: most plans the model's hyperparameters are fitted on (the best half and a seeded draw of the
#: rest); the model is then conditioned on every scored plan with those hyperparameters
FIT_POINTS = 96
#: in a space larger than the pool, the enumeration neighbours taken on each side of a good plan
NEIGHBOURS = 8


class SurrogateSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=kind_required)
    kind: Literal["surrogate"] = "surrogate"
    budget: int = Field(ge=1, le=10**6, description="plans to evaluate (at the cheapest level)")
    batch: int = Field(4, ge=1, le=256, description="plans chosen per round")
    initial: int | None = Field(
        None, ge=1, le=10**4, description="plans of the first round (None: 2 x batch, >= 8)"
    )
    prior: PriorSpec | None = Field(
        None, description="a layer prior orders the first round, feeds the model (true: defaults)"
    )
    rungs: int = Field(1, ge=1, le=6, description="fidelity levels (1: every plan at full)")
    eta: int = Field(3, ge=2, le=10, description="with rungs > 1: the best 1/eta go up a level")
    pool: int = Field(2048, ge=16, le=10**6, description="plans scored per round at most")
    seed: int = Field(0, ge=0, le=2**31 - 1)

    @field_validator("prior", mode="before")
    @classmethod
    def _flag(cls, value: Any) -> Any:
        """``true`` is the prior with its default settings, ``false`` none."""
        if value is True:
            return PriorSpec()
        return None if value is False else value


# -- features -----------------------------------------------------------------------------------


class Features:
    """Rows of plan features (module doc), built with one Python step per slice, not per layer."""

    def __init__(
        self, num_layers: int, models: Sequence[str], scaled: bool, prior: LayerPrior | None
    ) -> None:
        self.num_layers = num_layers
        self.models = {name: k for k, name in enumerate(models)}  # source models after the base
        self.scaled = scaled
        self.prior = prior

    @property
    def width(self) -> int:
        n = self.num_layers
        return n * (1 + len(self.models)) + (n if self.scaled else 0) + (self.prior is not None)

    def encode(self, plans: Sequence[Plan]) -> np.ndarray:
        n, blocks = self.num_layers, 1 + len(self.models)
        rows, columns, signs, weights = [], [], [], []
        junctions: list[float] = []
        for r, plan in enumerate(plans):
            for s in plan.slices:
                block = 0 if s.model is None else 1 + self.models[s.model]
                offset = block * (n + 1)
                rows += [r, r]
                columns += [offset + s.start, offset + s.end]
                signs += [1.0, -1.0]
                weights += [1.0 - (s.scale or 1.0)] * 2
            if self.prior is not None:
                junctions.append(self.prior.score(plan))
        r_ = np.asarray(rows, dtype=np.int64)
        c_ = np.asarray(columns, dtype=np.int64)
        sign = np.asarray(signs)
        marks = np.zeros((len(plans), blocks * (n + 1)))
        np.add.at(marks, (r_, c_), sign)  # +1 where a slice starts, -1 where it ends
        counts = np.cumsum(marks.reshape(len(plans), blocks, n + 1), axis=2)[:, :, :n]
        parts = [counts.reshape(len(plans), blocks * n)]
        if self.scaled:
            mass = np.zeros((len(plans), n + 1))
            base = c_ % (n + 1)
            np.add.at(mass, (r_, base), sign * np.asarray(weights))
            parts.append(np.cumsum(mass, axis=1)[:, :n])
        if self.prior is not None:
            parts.append(np.asarray(junctions)[:, None])
        return np.concatenate(parts, axis=1)


def features_for(sample: Sequence[Plan], prior: LayerPrior | None) -> Features:
    """Features of a space: its models and whether it scales, read from a few of its plans."""
    models: dict[str, None] = {}
    scaled = False
    for plan in sample:
        models.update(dict.fromkeys(plan.models()))
        scaled = scaled or plan.is_scaled
    num_layers = max(max(s.end for s in plan.slices) for plan in sample)
    return Features(num_layers, sorted(models), scaled, prior)


# -- the model ----------------------------------------------------------------------------------


class Model:
    """A Gaussian process on the features: predicted mean and standard deviation of the target."""

    def __init__(self, seed: int, linear_prior: bool) -> None:
        self.seed = seed
        self.linear_prior = linear_prior
        self.gp: Any = None

    def _kernel(self, width: int):
        from sklearn.gaussian_process.kernels import (
            ConstantKernel,
            DotProduct,
            Matern,
            WhiteKernel,
        )

        kernel = ConstantKernel(1.0, (1e-3, 1e3)) * Matern(
            length_scale=1.0, length_scale_bounds=(1e-2, 1e3), nu=2.5
        ) + WhiteKernel(1e-3, (1e-8, 1e-1))
        if self.linear_prior:
            kernel = kernel + ConstantKernel(0.1, (1e-4, 1e2)) * DotProduct(
                sigma_0=1.0, sigma_0_bounds="fixed"
            )
        return kernel

    def fit(self, x: np.ndarray, y: np.ndarray) -> Model:
        """Hyperparameters by maximum likelihood on at most ``FIT_POINTS`` of the points (the
        best half of them and a seeded draw of the others), then conditioned on all."""
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.gaussian_process import GaussianProcessRegressor

        subset = np.arange(len(y))
        if len(y) > FIT_POINTS:
            order = np.argsort(y, kind="stable")
            rest = np.random.default_rng(self.seed).permutation(order[FIT_POINTS // 2 :])
            subset = np.sort(np.concatenate([order[: FIT_POINTS // 2], rest[: FIT_POINTS // 2]]))
        self.gp = GaussianProcessRegressor(
            self._kernel(x.shape[1]),
            normalize_y=True,
            n_restarts_optimizer=2,
            random_state=self.seed,
        )
        with warnings.catch_warnings():  # a bound reached is fine: the fit stays usable
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.gp.fit(x[subset], y[subset])
        if len(subset) < len(y):
            self.believe(x, y)
        return self

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean, std = self.gp.predict(x, return_std=True)
        return mean, np.maximum(std, 1e-9)

    def believe(self, x: np.ndarray, y: np.ndarray) -> Model:
        """The same kernel conditioned on more (fantasized) observations, not refitted."""
        from sklearn.gaussian_process import GaussianProcessRegressor

        self.gp = GaussianProcessRegressor(self.gp.kernel_, normalize_y=True, optimizer=None).fit(
            x, y
        )
        return self


def expected_improvement(mean: np.ndarray, std: np.ndarray, best: float) -> np.ndarray:
    """EI of a minimization below ``best``."""
    from scipy.stats import norm

    z = (best - mean) / std
    return (best - mean) * norm.cdf(z) + std * norm.pdf(z)


def transform(losses: Sequence[float]) -> np.ndarray:
    """Losses as the model's targets: logarithms when all are positive."""
    y = np.asarray(losses, dtype=float)
    return np.log(y) if (y > 0).all() else y


# -- the strategy -------------------------------------------------------------------------------


class Surrogate(Strategy):
    kind = "surrogate"

    @property
    def prior(self) -> PriorSpec | None:
        return self.spec.prior

    def levels(self, evals: Sequence) -> list[Level]:
        return ladder(evals, self.spec.rungs, self.spec.eta)

    def stored_plans(self, plans: int) -> int:
        return min(plans, self.spec.budget)

    def evaluations_to_come(self, reached: Sequence[int], top: int) -> dict[int, int]:
        """New plans ``batch`` by batch until the budget, at the cheapest level; with rungs, the
        best ``ceil(n / eta)`` of each level's eventual count go up a level."""
        new = max(0, self.spec.budget - len(reached))
        if top == 0:
            return {0: new} if new else {}
        to_come = {0: new} if new else {}
        n = len(reached) + new
        for level in range(1, top + 1):
            n = math.ceil(n / self.spec.eta)
            done = sum(1 for r in reached if r >= level)
            if n > done:
                to_come[level] = n - done
        return to_come

    def _initial(self) -> int:
        return self.spec.initial or max(8, 2 * self.spec.batch)

    def propose(self, state: SearchState) -> RoundPlan | None:
        if state.round == 0 and self.spec.prior is not None and state.prior is None:
            return RoundPlan(wait=True)  # the reference's worker computes the prior meanwhile
        plan = RoundPlan()
        if state.top > 0:
            plan.promote = self._promotions(state)
        room = self.spec.budget - len(state.candidates)
        taken = {c.plan for c in state.candidates}
        wanted = min(room, self._initial() if not state.candidates else self.spec.batch)
        if wanted > 0:
            chosen = self._choose(state, taken, wanted)
            plan.add = [(point, 0, None) for point in chosen]
        stored = len(state.candidates) + len(plan.add)
        plan.last = stored >= min(self.spec.budget, len(state.points)) and state.top == 0
        return plan or None

    # -- fidelity ------------------------------------------------------------------------------

    def _promotions(self, state: SearchState) -> dict[int, int]:
        """Plans ranking in the best ``1/eta`` of those scored at their level, one level up."""
        promote = {}
        for level in range(state.top):
            ranked = sorted(
                (c for c in state.candidates if level in c.losses),
                key=lambda c: (c.losses[level], c.id),
            )
            for c in ranked[: math.ceil(len(ranked) / self.spec.eta)]:
                if c.fidelity == level and c.status == CandidateStatus.done:
                    promote[c.id] = level + 1
        return promote

    # -- choosing plans ------------------------------------------------------------------------

    def _pool(
        self, state: SearchState, taken: set[str], rng: random.Random
    ) -> dict[int, SpacePoint]:
        """Untaken plans the acquisition scores this round, by index (module doc)."""
        points = state.points
        if len(points) <= self.spec.pool:
            return {k: p for k, p in enumerate(points) if str(p.plan) not in taken}
        chosen: dict[int, SpacePoint] = {}
        for _ in range(4 * self.spec.pool):
            if len(chosen) == self.spec.pool:
                break
            k = rng.randrange(len(points))
            if k not in chosen and str((point := points[k]).plan) not in taken:
                chosen[k] = point
        return chosen

    def _choose(self, state: SearchState, taken: set[str], wanted: int) -> list[SpacePoint]:
        with small_linear_algebra():
            return self._choose_from(state, taken, wanted)

    def _choose_from(self, state: SearchState, taken: set[str], wanted: int) -> list[SpacePoint]:
        rng = random.Random(self.spec.seed * 1_000_003 + state.round)
        pool = self._pool(state, taken, rng)
        train = _training(state)
        if not pool:
            return []
        if len(train) < 2:
            return self._first(state, pool, wanted, rng)
        trained = [Plan.parse(c.plan) for c in train]
        feats = features_for([*(p.plan for p in pool.values()), *trained], state.prior)
        x_train = feats.encode(trained)
        y_train = transform([c.losses[0] for c in train])
        model = Model(self.spec.seed + state.round, state.prior is not None).fit(x_train, y_train)
        if len(state.points) > self.spec.pool:  # local step: enumeration neighbours of the best
            self._widen(state, taken, pool, model, feats)
        indices = list(pool)
        x_pool = feats.encode([pool[k].plan for k in indices])
        cost = np.asarray([len(pool[k].plan) for k in indices], dtype=float)
        picked: list[int] = []
        free = np.ones(len(indices), dtype=bool)
        for _ in range(min(wanted, len(indices))):
            mean, std = model.predict(x_pool)
            gain = expected_improvement(mean, std, float(y_train.min())) / cost
            gain[~free] = -np.inf
            best = int(np.argmax(gain))
            picked.append(indices[best])
            free[best] = False
            x_train = np.vstack([x_train, x_pool[best]])
            y_train = np.append(y_train, mean[best])
            model.believe(x_train, y_train)
        return [pool[k] for k in picked]

    def _first(
        self, state: SearchState, pool: dict[int, SpacePoint], wanted: int, rng: random.Random
    ) -> list[SpacePoint]:
        """The first round: the lowest prior scores, else a seeded random draw."""
        if state.prior is None:
            return [pool[k] for k in sorted(rng.sample(list(pool), min(wanted, len(pool))))]
        prior = state.prior
        ranked = sorted(pool, key=lambda k: (prior.score(pool[k].plan), len(pool[k].plan), k))
        return [pool[k] for k in ranked[:wanted]]

    def _widen(
        self,
        state: SearchState,
        taken: set[str],
        pool: dict[int, SpacePoint],
        model: Model,
        feats: Features,
    ) -> None:
        """Add to ``pool`` the enumeration neighbours of its ``batch`` best predicted plans."""
        points = state.points
        indices = list(pool)
        mean, _ = model.predict(feats.encode([pool[k].plan for k in indices]))
        for best in np.argsort(mean, kind="stable")[: self.spec.batch]:
            for step in range(-NEIGHBOURS, NEIGHBOURS + 1):
                k = indices[int(best)] + step
                if 0 <= k < len(points) and k not in pool:
                    point = points[k]
                    if str(point.plan) not in taken:
                        pool[k] = point

    # -- what the benchmark and the dashboard ask --------------------------------------------------

    def predict(self, state: SearchState, plans: Sequence[Plan]) -> np.ndarray:
        """The model's predicted target (transformed loss) of ``plans`` from what is stored."""
        train = _training(state)
        trained = [Plan.parse(c.plan) for c in train]
        feats = features_for([*plans, *trained], state.prior)
        with small_linear_algebra():
            model = Model(self.spec.seed + state.round, state.prior is not None)
            model.fit(feats.encode(trained), transform([c.losses[0] for c in train]))
            return model.predict(feats.encode(list(plans)))[0]


def small_linear_algebra():
    """One BLAS thread: the model's matrices are small, and several threads on a busy machine
    make its factorizations ten times slower (torch's own threads are left as they are)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def _training(state: SearchState) -> list[CandidateState]:
    """The candidates the model learns from: every one scored at the cheapest level (all of
    them when there is one level)."""
    return [c for c in state.candidates if 0 in c.losses]
