"""Search efficiency: how much evaluation each strategy spends to find the true best plans.

Ground truth first: every plan of a >= 100-plan SmolLM2 overlap space at full fidelity (a grid
sweep). Then each strategy runs as a sweep through the service's own code (``build_sweep``,
``store_sweep``, ``run_unit``, ``advance``) on the same database; scores are shared, so only the
lower fidelity levels of halving cost new compute, and every strategy is *charged* for what it
asked, whether or not it was stored already.

Cost unit: layer-token forwards, i.e. plan positions x scored tokens, summed over the evaluations
a strategy asked for (no credit for prefix sharing, which every strategy gets alike). Order:
round by round, and in a round by candidate ordinal (the strategy's own order). A plan is
*found* when it is evaluated at full fidelity. Regret at a budget: true perplexity of the plan
the strategy would recommend then (best at full fidelity so far, else best at the highest level
reached) minus the true best perplexity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from benchmarks import Section, median, smollm2, step

SPACE = {"kind": "overlap", "slice_size": [6, 16], "jump": [2, 6], "last_slice": [4, 8, 2]}
FULL = {"kind": "perplexity", "corpus": "pydoc_data.topics", "tokens": 512, "ctx": 128}
QUICK = {"kind": "perplexity", "corpus": "pydoc_data.topics", "tokens": 256, "ctx": 128}
BUDGET_FRACTION = 0.30  # random / tpe / cmaes budgets: this share of the space's plans
#: scores kept between runs: the ground truth is computed once (costs are charged regardless)
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
    return Trace(label, events, len(levels) - 1, losses)


def run(quick: bool) -> Section:

    from frankensweep.core.config import Settings
    from frankensweep.db import make_engine, make_sessionmaker, upgrade
    from frankensweep.models import smollm2_path
    from frankensweep.search import enumerate_space, space_from_spec
    from frankensweep.sweeps.submission import SubmissionError
    from frankensweep.worker.loading import ModelCache

    evals = [QUICK if quick else FULL]
    seeds = [0, 1] if quick else [0, 1, 2, 3, 4]
    section = Section(name="search", summary="", quick=quick)
    plans = enumerate_space(space_from_spec(SPACE, num_layers=30)).kept
    budget = round(plans * BUDGET_FRACTION)
    step("loading SmolLM2-135M-Instruct (GGUF)")
    loaded = smollm2()
    model = str(smollm2_path())
    models = ModelCache()
    models.put(loaded.base, "cpu", "float32")  # the loaded model, shared

    CACHE.mkdir(exist_ok=True)
    url = f"sqlite:///{CACHE / ('search-quick.db' if quick else 'search.db')}"
    # one database for the ground truth and every strategy: scores are shared
    upgrade(url)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    settings = Settings(database_url=url, device="cpu", dtype="float32", unit_size=8)

    def sweep(label: str, strategy: dict) -> Trace:
        step(f"{label}")
        payload = {"name": label, "model": model, "space": SPACE, "evals": evals}
        sweep_id = _run_sweep(sessions, settings, models, payload | {"strategy": strategy})
        return _trace(sessions, sweep_id, label)

    truth = sweep("ground truth: grid, every plan at full fidelity", {"kind": "grid"})
    true_loss = {p: loss for (p, lv), loss in truth.losses.items() if lv == truth.top}
    ranking = sorted(true_loss, key=true_loss.get)
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
    for kind in ("random", "tpe", "cmaes"):
        label = f"{kind} (budget {budget}" + (", batch 4)" if kind != "random" else ")")
        runs[label] = []
        for seed in seeds:
            strategy = {"kind": kind, "budget": budget, "seed": seed}
            if kind != "random":
                strategy["batch"] = 4
            runs[label].append(sweep(f"{label}, seed {seed}", strategy))
    engine.dispose()

    def share(cost: float) -> str:
        return "never" if math.isinf(cost) else f"{cost / grid_cost:.0%}"

    ok_any = False
    for label, traces in runs.items():
        to_best = median([t.found_at(best) for t in traces])
        to_top3 = median([max(t.found_at(p) for p in top3) for t in traces])
        regrets = []
        for t in traces:
            rec = t.recommendation(REGRET_AT * grid_cost)
            regrets.append(true_loss[rec] - true_loss[best] if rec else math.inf)
        found = sum(t.found_at(best) <= TARGET * grid_cost for t in traces)
        if label.startswith(("halving", "tpe")):  # the target is for either of them
            ok_any = ok_any or to_best <= TARGET * grid_cost
        runs_note = f" (median of {len(traces)} seeds)" if len(traces) > 1 else ""
        section.add(f"{label}: cost until the true best is found{runs_note}", share(to_best))
        section.add(f"{label}: cost until the true top-3 are found{runs_note}", share(to_top3))
        section.add(
            f"{label}: regret at {REGRET_AT:.0%} of the grid's cost{runs_note}",
            "no recommendation yet"
            if math.isinf(median(regrets))
            else f"{median(regrets):+.3f} ppl",
        )
        section.add(
            f"{label}: total cost; runs finding the best within {TARGET:.0%}",
            f"{share(median([t.cost for t in traces]))}; {found} of {len(traces)}",
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
        f"pydoc_data.topics, ctx {spec['ctx']}); each strategy charged for what it asked."
    )
    section.settings = {
        "space": str(SPACE),
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
        f"Budgets of random / tpe / cmaes: {budget} plans = {BUDGET_FRACTION:.0%} of the space.",
        "Regret: true perplexity of the plan recommended at that cost minus the true best's.",
    ]
    return section
