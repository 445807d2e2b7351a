"""Search efficiency: how much evaluation each strategy spends to find the true best plans.

Two spaces of SmolLM2, each with its ground truth (every plan at full fidelity, a grid sweep):

- an overlap space of >= 100 plans, perplexity on the bundled text: grid, halving, random, TPE,
  CMA-ES and the surrogate;
- the single-block repeat space (RYS, 465 plans besides the base model), perplexity on 512 tokens
  of WikiText-2 test, a corpus no strategy setting was tuned on (the surrogate was developed on the
  same space scored on the bundled text): halving, TPE, the surrogate without and with the layer
  prior (computed on the bundled text), 5 seeds each. Also the surrogate's rank correlation with
  the truth on the plans it never evaluated, how far the prior's best block is from the true best,
  and the surrogate's time per round on a space of 10^6 plans.

Each strategy runs as a sweep through the service's own code (``build_sweep``, ``store_sweep``,
``run_unit``, ``advance``) on one database; scores are shared, so only the lower fidelity levels
of halving cost new compute, and every strategy is *charged* for what it asked, whether or not it
was stored already. Every ground truth is scored once per run (a fresh database in
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
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import Section, fmt_seconds, median, smollm2, step

SPACE = {"kind": "overlap", "slice_size": [6, 16], "jump": [2, 6], "last_slice": [4, 8, 2]}
FULL = {"kind": "perplexity", "corpus": "pydoc_data.topics", "tokens": 512, "ctx": 128}
QUICK = {"kind": "perplexity", "corpus": "pydoc_data.topics", "tokens": 256, "ctx": 128}
BUDGET_FRACTION = 0.30  # random / tpe / cmaes budgets: this share of the space's plans
#: the run's database: ground truths scored once, then shared by every strategy (each charged)
CACHE = Path(__file__).resolve().parent.parent / ".bench-cache"
REGRET_AT = 0.25  # regret reported at this share of the grid's cost
TARGET = 0.30  # halving or TPE must find the true best within this share of the grid's cost

#: the RYS part: WikiText-2 test from the shared data dir next to the repository (never copied)
WIKITEXT = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "wikitext-2"
RYS_SPACE = {"kind": "rys"}
RYS_EVAL = {"kind": "perplexity", "corpus": str(WIKITEXT / "test.txt"), "tokens": 512, "ctx": 256}
RYS_TARGET = 0.10  # the surrogate must find the true best within this share of the grid's cost
RYS_SEEDS = 4  # of 5 seeds at least
SPEARMAN_TARGET = 0.9  # held-out rank correlation of the surrogate with the truth (median)
SURROGATE = {"kind": "surrogate", "budget": 60, "batch": 4}
ROUND_TARGET = 1.0  # seconds per surrogate round on a space of 10^6 plans


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
        f"pydoc_data.topics, ctx {spec['ctx']}), and all 465 single-block repeat plans by "
        f"perplexity on {RYS_EVAL['tokens']} tokens of WikiText-2 test (rows 'rys: ...'); each "
        "strategy charged for what it asked."
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


def held_out_spearman(bench: Bench, sweep_id: int, true_loss: dict[str, float]) -> float:
    """Rank correlation of the surrogate's predictions with the truth, on the plans its sweep
    never evaluated (the model refitted on what the sweep stored, as its last round saw it)."""
    from scipy.stats import spearmanr

    from frankensweep.db import Sweep
    from frankensweep.search import Plan
    from frankensweep.sweeps.config import sweep_config
    from frankensweep.sweeps.rounds import search_state

    with bench.sessions() as s:
        sweep = s.get(Sweep, sweep_id)
        state = search_state(s, sweep, sweep.round + 1)
        strategy = sweep_config(sweep).strategy
    seen = {c.plan for c in state.candidates}
    held = [p for p in true_loss if p not in seen]
    predicted = strategy.predict(state, [Plan.parse(p) for p in held])  # type: ignore[attr-defined]
    return float(spearmanr(predicted, [true_loss[p] for p in held]).statistic)


def round_seconds(rounds: int = 6) -> tuple[float, int]:
    """Median seconds of a surrogate round on a space of 10^6 plans (losses made up: positions
    plus noise), after a first round that imports scikit-learn; and the space's size."""
    import random

    from frankensweep.core.status import CandidateStatus
    from frankensweep.evals.registry import PerplexitySpec
    from frankensweep.strategies import CandidateState, SearchState, full_level, make_strategy
    from frankensweep.testing.spaces import TwoBlockPoints

    points = TwoBlockPoints()
    strategy = make_strategy({"kind": "surrogate", "budget": 10**6, "batch": 8, "seed": 0})
    levels = [full_level([PerplexitySpec()])]
    candidates: list[CandidateState] = []
    noise = random.Random(0)
    seconds = []
    for number in range(rounds + 2):
        state = SearchState(1, number, levels, candidates, "", lambda: points)
        start = time.perf_counter()
        proposed = strategy.propose(state)
        seconds.append(time.perf_counter() - start)
        assert proposed is not None
        for point, fidelity, _ in proposed.add:
            loss = len(point.plan) + noise.random()
            candidates.append(
                CandidateState(
                    len(candidates) + 1,
                    str(point.plan),
                    point.params,
                    fidelity,
                    CandidateStatus.done,
                    None,
                    loss,
                    {0: loss},
                )
            )
    return statistics.median(seconds[2:]), len(points)


def _rys(section: Section, bench: Bench, quick: bool) -> None:
    """The RYS space on WikiText-2: halving, TPE, the surrogate with and without the prior."""
    from frankensweep.evals.prior import PriorSpec
    from frankensweep.search import Plan

    if not (WIKITEXT / "test.txt").is_file():
        section.notes.append(f"rys part not run: WikiText-2 test not found at {WIKITEXT}")
        return
    seeds = [0, 1] if quick else [0, 1, 2, 3, 4]
    evals = [RYS_EVAL]

    def sweep(label: str, strategy: dict) -> Trace:
        return bench.sweep(f"rys: {label}", RYS_SPACE, evals, strategy)

    truth = sweep("ground truth: grid, every plan at full fidelity", {"kind": "grid"})
    true_loss = _truth(truth)
    ranking = sorted(true_loss, key=true_loss.get)  # type: ignore[arg-type]
    best = ranking[0]
    grid_cost = truth.cost
    prior_spec = PriorSpec()
    prior_cost = 30 * (prior_spec.tokens // prior_spec.ctx * prior_spec.ctx)
    plans = len(true_loss)
    budget = SURROGATE["budget"]
    tpe_budget = round(plans * BUDGET_FRACTION)

    runs: dict[str, list[Trace]] = {}
    runs["rys: halving (eta 3, 3 rungs; no seed: it screens every plan)"] = [
        sweep("halving (eta 3, 3 rungs)", {"kind": "halving", "eta": 3, "rungs": 3})
    ]
    for label, strategy, extra in (
        (
            f"tpe (budget {tpe_budget}, batch 4)",
            {"kind": "tpe", "budget": tpe_budget, "batch": 4},
            0.0,
        ),
        (f"surrogate (budget {budget}, batch 4)", SURROGATE, 0.0),
        (f"surrogate + prior (budget {budget}, batch 4)", SURROGATE | {"prior": True}, prior_cost),
    ):
        runs[f"rys: {label}"] = [
            sweep(f"{label}, seed {seed}", strategy | {"seed": seed}).charged(extra)
            for seed in seeds
        ]
    found = _strategy_rows(section, runs, true_loss, grid_cost, RYS_TARGET, RYS_TARGET)

    rhos: dict[str, list[float]] = {}
    for label, traces in runs.items():
        if "surrogate" in label:
            rhos[label] = [held_out_spearman(bench, t.sweep_id, true_loss) for t in traces]
            section.add(
                f"{label}: Spearman with the truth on plans never evaluated (median of "
                f"{len(traces)} seeds)",
                f"{median(rhos[label]):.3f}; each: {', '.join(f'{r:.3f}' for r in rhos[label])}",
            )
    met = [
        label
        for label in rhos
        if sum(share <= RYS_TARGET for share in found[label]) >= min(RYS_SEEDS, len(seeds))
        and median(rhos[label]) >= SPEARMAN_TARGET
    ]
    section.add(
        f"rys: the surrogate (with or without the prior) finds the true best within "
        f"{RYS_TARGET:.0%} of the grid's cost in >= {RYS_SEEDS} of 5 seeds, held-out Spearman "
        f">= {SPEARMAN_TARGET}",
        "yes: " + "; ".join(met) if met else "no",
        "yes",
        bool(met),
    )

    from frankensweep.worker.prior import stored_prior_of

    prior = stored_prior_of(bench.sessions, bench.model, 30, prior_spec)
    if prior is not None:
        i, j = prior.best_block()
        true_plan = Plan.parse(best)
        ti, tj = true_plan.slices[1].start, true_plan.slices[0].end
        scores = {p: prior.score(Plan.parse(p)) for p in true_loss}
        from scipy.stats import spearmanr

        rank = sorted(scores, key=lambda p: (scores[p], p)).index(best) + 1
        section.add(
            "rys: the prior's best block vs the true best block",
            f"{i}-{j} vs {ti}-{tj}: start {abs(i - ti)}, end {abs(j - tj)} layers apart; "
            f"the true best ranks {rank} of {plans} by the prior",
        )
        rho = spearmanr([scores[p] for p in true_loss], list(true_loss.values())).statistic
        section.add("rys: Spearman of the prior's score with the truth (all plans)", f"{rho:.3f}")

    seconds, size = round_seconds()
    section.add(
        f"surrogate: seconds per round on a space of {size:,} plans (batch 8, pool 2048)",
        fmt_seconds(seconds),
        f"<= {ROUND_TARGET:g} s",
        seconds <= ROUND_TARGET,
    )
    section.settings |= {
        "rys eval": (
            f"perplexity, {RYS_EVAL['tokens']} tokens of WikiText-2 test, ctx {RYS_EVAL['ctx']}"
        ),
        "rys true best": f"{best} (perplexity {true_loss[best]:.3f})",
        "rys true top-3": ", ".join(f"{p} ({true_loss[p]:.3f})" for p in ranking[:3]),
        "rys grid cost": f"{grid_cost / 1e6:.2f} M layer-tokens",
    }
    section.notes += [
        f"RYS part: {plans} plans; tpe budget {tpe_budget} plans ({BUDGET_FRACTION:.0%}); "
        f"surrogate {SURROGATE} (a budget in plans; it is charged only for what it asked); "
        f"its prior: {prior_spec.tokens} tokens of pydoc_data.topics, charged "
        f"{prior_cost / grid_cost:.2%} of the grid's cost (one forward pass of the base model).",
        "Held-out Spearman: the surrogate's model refitted on everything its sweep stored, "
        "predicting every plan the sweep did not evaluate, against their true perplexity.",
        "The surrogate's settings were chosen on the same space scored on pydoc_data.topics "
        "(never on WikiText-2).",
    ]


def run(quick: bool) -> Section:
    from frankensweep.core.config import Settings
    from frankensweep.db import make_engine, make_sessionmaker, upgrade
    from frankensweep.models import smollm2_path
    from frankensweep.worker.loading import ModelCache

    section = Section(name="search", summary="", quick=quick)
    step("loading SmolLM2-135M-Instruct (GGUF)")
    loaded = smollm2()
    model = str(smollm2_path())
    models = ModelCache()
    models.put(loaded.base, "cpu", "float32")  # the loaded model, shared

    CACHE.mkdir(exist_ok=True)
    path = CACHE / ("search-quick.db" if quick else "search.db")
    for stale in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        stale.unlink(missing_ok=True)  # one run, one set of figures: nothing from a past run
    url = f"sqlite:///{path}"
    # one database for the ground truths and every strategy: scores are shared
    upgrade(url)
    engine = make_engine(url)
    roots = ":".join(str(p) for p in (Path(model).parent, WIKITEXT, Path.cwd()))
    settings = Settings(
        database_url=url, device="cpu", dtype="float32", unit_size=8, path_roots=roots
    )
    bench = Bench(make_sessionmaker(engine), settings, models, model)
    try:
        _overlap(section, bench, quick)
        _rys(section, bench, quick)
    finally:
        engine.dispose()
    return section
