"""Search efficiency: how much evaluation each strategy spends to find the true best plans.

Ground truth first: every plan of a >= 100-plan SmolLM2 overlap space at full fidelity (a grid
sweep), perplexity on the bundled text. Then grid, halving, random, TPE, CMA-ES and the
surrogate. The single-block repeat space on WikiText-2 (the surrogate's targets) is the section
``search_rys`` (``benchmarks/search_rys.py``), which reuses this module's machinery.

Each strategy runs as a sweep through the service's own code (``build_sweep``, ``store_sweep``,
``run_unit``, ``advance``) on one database; scores are shared, so only the lower fidelity levels
of halving cost new compute, and every strategy is *charged* for what it asked, whether or not it
was stored already. The ground truth is scored once per run (a fresh database in
``.bench-cache/``, emptied at the start of the run): every figure comes from that one run.

Cost unit: layer-token forwards, i.e. plan positions x scored tokens, summed over the evaluations
a strategy asked for (no credit for prefix sharing, which every strategy gets alike), plus, for a
strategy using the layer prior, its one forward pass of the base model. Order: round by round, and
in a round by candidate ordinal (the strategy's own order). A plan is *found* when it is evaluated
at full fidelity. Regret at a budget: true perplexity of the plan the strategy would recommend then
(best at full fidelity so far, else best at the highest level reached) minus the true best
perplexity.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import Section, median, smollm2, step

SPACE = {"kind": "overlap", "slice_size": [6, 16], "jump": [2, 6], "last_slice": [4, 8, 2]}
FULL = {"kind": "perplexity", "corpus": "pydoc_data.topics", "tokens": 512, "ctx": 128}
QUICK = {"kind": "perplexity", "corpus": "pydoc_data.topics", "tokens": 256, "ctx": 128}
BUDGET_FRACTION = 0.30  # random / tpe / cmaes budgets: this share of the space's plans
#: the run's database: ground truths scored once, then shared by every strategy (each charged)
CACHE = Path(__file__).resolve().parent.parent / ".bench-cache"
REGRET_AT = 0.25  # regret reported at this share of the grid's cost
TARGET = 0.30  # halving or TPE must find the true best within this share of the grid's cost


@dataclass
class Trace:
    """One strategy run: cumulative cost at each evaluation, in order, and what it evaluated."""

    label: str
    events: list[tuple[float, str, int]]  # (cumulative cost, plan, level)
    top: int  # index of the full-fidelity level
    losses: dict[tuple[str, int], float]  # (plan, level) -> ranking loss at that level
    sweep_id: int = 0

    @property
    def cost(self) -> float:
        return self.events[-1][0] if self.events else 0.0

    def found_at(self, plan: str) -> float:
        """Cost spent when ``plan`` was first evaluated at full fidelity (inf: never)."""
        return next((c for c, p, lv in self.events if p == plan and lv == self.top), math.inf)

    def recommendation(self, budget: float) -> str | None:
        """The plan it would recommend having spent ``budget``."""
        seen = [(p, lv) for c, p, lv in self.events if c <= budget]
        if not seen:
            return None
        level = max(lv for _, lv in seen)
        return min((p for p, lv in seen if lv == level), key=lambda p: self.losses[(p, level)])

    def charged(self, extra: float) -> Trace:
        """The same run with ``extra`` spent before its first evaluation (the layer prior)."""
        events = [(c + extra, p, lv) for c, p, lv in self.events]
        return Trace(self.label, events, self.top, self.losses, self.sweep_id)


def _run_sweep(sessions, settings, models, payload: dict) -> int:
    """Submit and evaluate one sweep to its end, round by round, as the embedded worker does."""
    from frankensweep.testing.sweeps import submit_and_run

    return submit_and_run(sessions, settings, payload, models)


def _trace(sessions, sweep_id: int, label: str) -> Trace:
    """Rebuild the order and cost of what a sweep asked for from its stored candidates."""
    from sqlalchemy import select

    from frankensweep.db import Candidate, Sweep
    from frankensweep.db.store import results_for
    from frankensweep.search import Plan
    from frankensweep.sweeps.config import sweep_config

    with sessions() as s:
        sweep = s.get(Sweep, sweep_id)
        levels = sweep_config(sweep).levels
        candidates = list(
            s.scalars(
                select(Candidate)
                .where(Candidate.sweep_id == sweep_id, Candidate.is_reference.is_(False))
                .order_by(Candidate.ordinal)
            )
        )
        keys = {level.rank_key for level in levels}
        stored = results_for(s, sweep_config(sweep).model_key, [c.digest for c in candidates], keys)
    tokens = [sum(spec.tokens for spec in level.evals) for level in levels]
    asked = []  # (round, ordinal, plan, level, cost)
    losses = {}
    for c in candidates:
        for level in range(c.fidelity + 1):  # rung ``level`` ran ``fidelity - level`` rounds ago
            asked.append((c.round - (c.fidelity - level), c.ordinal, c.plan, level))
            result = stored[(c.digest, levels[level].rank_key)]
            losses[(c.plan, level)] = levels[level].loss(result.metrics)
    asked.sort()
    events, total = [], 0.0
    for _round, _ordinal, plan, level in asked:
        total += len(Plan.parse(plan)) * tokens[level]
        events.append((total, plan, level))
    return Trace(label, events, len(levels) - 1, losses, sweep_id)


@dataclass
class Bench:
    """The service pieces every sweep of the section runs through: one database, one model."""

    sessions: Any
    settings: Any
    models: Any
    model: str

    def sweep(self, label: str, space: dict, evals: list, strategy: dict) -> Trace:
        step(label)
        payload = {"name": label[:200], "model": self.model, "space": space, "evals": evals}
        sweep_id = _run_sweep(
            self.sessions, self.settings, self.models, payload | {"strategy": strategy}
        )
        return _trace(self.sessions, sweep_id, label)


def _truth(trace: Trace) -> dict[str, float]:
    return {p: loss for (p, lv), loss in trace.losses.items() if lv == trace.top}


def _share(cost: float, grid_cost: float) -> str:
    return "never" if math.isinf(cost) else f"{cost / grid_cost:.1%}"


def _strategy_rows(
    section: Section,
    runs: dict[str, list[Trace]],
    true_loss: dict[str, float],
    grid_cost: float,
    regret_at: float,
    target: float,
) -> dict[str, list[float]]:
    """The rows of every strategy; for each, the cost share at which each run found the best."""
    ranking = sorted(true_loss, key=true_loss.get)  # type: ignore[arg-type]
    best, top3 = ranking[0], ranking[:3]
    found: dict[str, list[float]] = {}
    for label, traces in runs.items():
        to_best = [t.found_at(best) for t in traces]
        to_top3 = [max(t.found_at(p) for p in top3) for t in traces]
        regrets = []
        for t in traces:
            rec = t.recommendation(regret_at * grid_cost)
            regrets.append(true_loss[rec] - true_loss[best] if rec else math.inf)
        found[label] = [c / grid_cost for c in to_best]
        hits = sum(c <= target * grid_cost for c in to_best)
        note = f" (median of {len(traces)} seeds)" if len(traces) > 1 else ""
        each = (
            f"; each: {', '.join(_share(c, grid_cost) for c in to_best)}" if len(traces) > 1 else ""
        )
        section.add(
            f"{label}: cost until the true best is found{note}",
            _share(median(to_best), grid_cost) + each,
        )
        section.add(
            f"{label}: cost until the true top-3 are found{note}",
            _share(median(to_top3), grid_cost),
        )
        section.add(
            f"{label}: regret at {regret_at:.0%} of the grid's cost{note}",
            "no recommendation yet"
            if math.isinf(median(regrets))
            else f"{median(regrets):+.3f} ppl",
        )
        section.add(
            f"{label}: total cost; runs finding the best within {target:.0%}",
            f"{_share(median([t.cost for t in traces]), grid_cost)}; {hits} of {len(traces)}",
        )
    return found


def _overlap(section: Section, bench: Bench, quick: bool) -> None:
    """The overlap space on the bundled text: every strategy, the 30% target of halving / TPE."""
    from frankensweep.search import enumerate_space, space_from_spec
    from frankensweep.sweeps.submission import SubmissionError

    evals = [QUICK if quick else FULL]
    seeds = [0, 1] if quick else [0, 1, 2, 3, 4]
    plans = enumerate_space(space_from_spec(SPACE, num_layers=30)).kept
    budget = round(plans * BUDGET_FRACTION)

    def sweep(label: str, strategy: dict) -> Trace:
        return bench.sweep(label, SPACE, evals, strategy)

    truth = sweep("ground truth: grid, every plan at full fidelity", {"kind": "grid"})
    true_loss = _truth(truth)
    ranking = sorted(true_loss, key=true_loss.get)  # type: ignore[arg-type]
    best, top3 = ranking[0], ranking[:3]
    grid_cost = truth.cost

    runs: dict[str, list[Trace]] = {"grid": [truth]}
    halvings = [(3, 3), (3, 4), (4, 3)]
    for eta, rungs in halvings:
        label = f"halving (eta {eta}, {rungs} rungs)"
        try:
            runs[label] = [sweep(label, {"kind": "halving", "eta": eta, "rungs": rungs})]
        except SubmissionError as exc:  # too few tokens for so many rungs (--quick)
            section.notes.append(f"{label} not run: {exc}")
    for kind in ("random", "tpe", "cmaes", "surrogate"):
        label = f"{kind} (budget {budget}" + (", batch 4)" if kind != "random" else ")")
        runs[label] = []
        for seed in seeds:
            strategy = {"kind": kind, "budget": budget, "seed": seed}
            if kind != "random":
                strategy["batch"] = 4
            runs[label].append(sweep(f"{label}, seed {seed}", strategy))

    found = _strategy_rows(section, runs, true_loss, grid_cost, REGRET_AT, TARGET)
    ok_any = any(
        median(shares) <= TARGET
        for label, shares in found.items()
        if label.startswith(("halving", "tpe"))  # the target is for either of them
    )
    section.add(
        "halving or TPE finds the true best within 30% of the grid's cost",
        "yes" if ok_any else "no",
        "yes",
        ok_any,
    )
    spec = evals[0]
    section.summary = (
        f"Search efficiency on SmolLM2-135M-Instruct: ground truth = all {plans} plans of an "
        f"overlap space at full fidelity (perplexity, {spec['tokens']} tokens of "
        f"pydoc_data.topics, ctx {spec['ctx']}); each strategy charged for what it asked. "
        "The surrogate's own targets are in the section search_rys."
    )
    section.settings |= {
        "overlap space": str(SPACE),
        "plans": str(plans),
        "true best": f"{best} (perplexity {true_loss[best]:.3f})",
        "true top-3": ", ".join(f"{p} ({true_loss[p]:.3f})" for p in top3),
        "grid cost": f"{grid_cost / 1e6:.2f} M layer-tokens",
        "seeds": ", ".join(map(str, seeds)),
    }
    section.notes[:0] = [
        "Cost = plan positions x scored tokens per evaluation asked (layer-token forwards); "
        "evaluations run round by round, within a round in the strategy's own order.",
        "A plan is found once evaluated at full fidelity; halving's lower levels score a prefix "
        "of the same corpus with shorter windows (see frankensweep/strategies/fidelity.py).",
        f"Overlap space: budgets of random / tpe / cmaes / surrogate: {budget} plans = "
        f"{BUDGET_FRACTION:.0%} of the space.",
        "Regret: true perplexity of the plan recommended at that cost minus the true best's.",
    ]


@contextmanager
def open_bench(
    name: str, quick: bool, roots: tuple[Path, ...] = (), unit_size: int = 8
) -> Iterator[Bench]:
    """SmolLM2 loaded once and a fresh database ``.bench-cache/<name>[-quick].db`` for the
    ground truth and every strategy of one run (scores shared; each strategy charged)."""
    from frankensweep.core.config import Settings
    from frankensweep.db import make_engine, make_sessionmaker, upgrade
    from frankensweep.models import smollm2_path
    from frankensweep.worker.loading import ModelCache

    step("loading SmolLM2-135M-Instruct (GGUF)")
    loaded = smollm2()
    model = str(smollm2_path())
    models = ModelCache()
    models.put(loaded.base, "cpu", "float32")  # the loaded model, shared

    CACHE.mkdir(exist_ok=True)
    path = CACHE / (f"{name}-quick.db" if quick else f"{name}.db")
    for stale in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        stale.unlink(missing_ok=True)  # one run, one set of figures: nothing from a past run
    url = f"sqlite:///{path}"
    upgrade(url)
    engine = make_engine(url)
    paths = ":".join(str(p) for p in (Path(model).parent, *roots, Path.cwd()))
    settings = Settings(
        database_url=url, device="cpu", dtype="float32", unit_size=unit_size, path_roots=paths
    )
    try:
        yield Bench(make_sessionmaker(engine), settings, models, model)
    finally:
        engine.dispose()


def run(quick: bool) -> Section:
    section = Section(name="search", summary="", quick=quick)
    with open_bench("search", quick) as bench:
        _overlap(section, bench, quick)
    return section
