"""The ETA under halving: estimated remaining time at the start of each round vs the truth.

A fresh SQLite database (nothing reused: every evaluation computes), SmolLM2-135M on this CPU, one
worker (this process, as the embedded worker runs a sweep). A short warm-up sweep of 4 plans
outside the space measures the cost per layer-token first, as an earlier sweep of the same model
would; then a halving sweep (eta 3, 3 rungs) over the overlap space of ``benchmarks/search.py``.
At the start of each round (its candidates stored, none evaluated) the sweep's ETA
(``sweeps.status.eta_seconds``) is read, and so is the estimator it replaces (elapsed time /
finished candidates x candidates left); the true remaining time is the sweep's end minus then.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from benchmarks import Section, fmt_seconds, smollm2, step
from benchmarks.search import FULL, QUICK, SPACE

#: plans outside SPACE (first slices longer than its 16 layers): the warm-up's, never reused
WARM_UP = ["0-20,10-30", "0-18,12-30", "0-22,14-30", "0-24,8-30"]
HALVING = {"kind": "halving", "eta": 3, "rungs": 3}
TARGET = 0.5  # the ETA within 50% of the true remaining time


def elapsed_over_done(session, sweep) -> float | None:
    """The estimator the ETA replaces: elapsed / (done + failed) x (pending + running)."""
    from frankensweep.db.models import utcnow
    from frankensweep.db.store import status_counts

    counts = status_counts(session, sweep.id)
    done = counts["done"] + counts["failed"]
    left = counts["pending"] + counts["running"]
    if not done or sweep.started_at is None:
        return None
    return (utcnow() - sweep.started_at).total_seconds() / done * left


def run(quick: bool) -> Section:
    from frankensweep.core.config import Settings
    from frankensweep.db import Sweep, make_engine, make_sessionmaker, upgrade
    from frankensweep.models import smollm2_path
    from frankensweep.sweeps.request import SweepCreate
    from frankensweep.sweeps.status import eta_seconds
    from frankensweep.sweeps.submission import build_sweep, store_sweep
    from frankensweep.testing.sweeps import submit_and_run
    from frankensweep.worker.dispatch import run_sweep
    from frankensweep.worker.loading import ModelCache

    section = Section(name="eta", summary="", quick=quick)
    evals = [QUICK if quick else FULL]
    strategy = HALVING | ({"budget": 27} if quick else {})
    step("loading SmolLM2-135M-Instruct (GGUF)")
    loaded = smollm2()
    model = str(smollm2_path())
    models = ModelCache()
    models._models[(model, "cpu", "float32")] = loaded.base

    with tempfile.TemporaryDirectory(prefix="fs-bench-eta-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'eta.db'}"
        upgrade(url)
        engine = make_engine(url)
        sessions = make_sessionmaker(engine)
        settings = Settings(database_url=url, device="cpu", dtype="float32", unit_size=8)
        base = {"model": model, "evals": evals}

        step("warm-up: 4 plans at full fidelity (the cost per layer-token)")
        warm = {"name": "warm-up", "space": {"kind": "explicit", "plans": WARM_UP}}
        submit_and_run(sessions, settings, base | warm, models)

        step(f"halving sweep {strategy} over {SPACE}")
        payload = base | {"name": "eta", "space": SPACE, "strategy": strategy}
        submission = build_sweep(SweepCreate.model_validate(payload), settings)
        with sessions() as s:
            store_sweep(s, submission)
        sweep_id = submission.sweep.id
        marks: list[tuple[float, int, int, float | None, float | None]] = []

        def at_round_start() -> None:
            with sessions() as s:
                sweep = s.get(Sweep, sweep_id)
                open_ = sum(c.status in ("pending", "running") for c in sweep.candidates)
                eta = eta_seconds(s, sweep, workers=1)
                marks.append(
                    (time.perf_counter(), sweep.round, open_, eta, elapsed_over_done(s, sweep))
                )

        start = time.perf_counter()
        run_sweep(sessions, settings, sweep_id, "bench", models, on_round=at_round_start)
        end = time.perf_counter()
        with sessions() as s:
            sweep = s.get(Sweep, sweep_id)
            status = sweep.status
        engine.dispose()

    assert status == "done", status
    worst = 0.0
    for at, index, open_, eta, old in marks:
        true = end - at
        error = abs(eta - true) / true if eta is not None else float("inf")
        worst = max(worst, error)
        shown = f"{fmt_seconds(eta)} ({eta / true:.2f}x)" if eta is not None else "unknown"
        section.add(
            f"round {index + 1} of 3 ({open_} evaluations this round): ETA vs true remaining",
            f"{shown} vs {fmt_seconds(true)}",
            f"within {TARGET:.0%}",
            error <= TARGET,
        )
        section.add(
            f"round {index + 1} of 3: the replaced estimator (elapsed / done x left)",
            "unknown (nothing done yet)"
            if old is None
            else f"{fmt_seconds(old)} ({old / true:.2f}x the truth)",
        )
    section.add(
        "ETA within 50% of the true remaining time at the start of every round",
        "yes" if worst <= TARGET else "no",
        "yes",
        worst <= TARGET,
    )
    section.summary = (
        "The ETA under halving (eta 3, 3 rungs) on SmolLM2-135M-Instruct, one worker: "
        "estimated vs true remaining time at the start of each round."
    )
    spec = evals[0]
    section.settings = {
        "space": str(SPACE),
        "strategy": str(strategy),
        "eval": f"perplexity, {spec['tokens']} tokens, ctx {spec['ctx']}",
        "sweep wall-clock": fmt_seconds(end - start),
        "warm-up": f"{len(WARM_UP)} plans outside the space at full fidelity",
    }
    section.notes = [
        "The ETA prices each evaluation still to run, this round's and the later rounds' that "
        "the strategy will ask for, at the seconds per layer-token (plan positions x scored "
        "tokens) measured on the model's stored results for the sweep's eval settings; at the "
        "start of round 1 those are the warm-up's (without any, the ETA is unknown until the "
        "first unit ends). Later rounds' plans are priced at the mean positions of the current "
        "rung's plans.",
        "The replaced estimator divides elapsed time by finished candidates: pruned ones do not "
        "count, and promoted ones are pending again, so under halving it is far off.",
        "Nothing was reused from earlier runs (a fresh database): every evaluation computed.",
    ]
    return section
