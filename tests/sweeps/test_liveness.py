"""What a sweep's status says about its fleet, on real SQLite and PostgreSQL: the workers holding
its units and when each was last heard from, a stall in a sentence, silent units handed over
once (attempts kept), progress in evaluations, and an ETA over every evaluation still to run."""

from __future__ import annotations

import math
import os
import subprocess
import time
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from frankensweep.core.config import Settings
from frankensweep.db import Candidate, Sweep, Worker, make_engine, make_sessionmaker
from frankensweep.db.models import utcnow
from frankensweep.db.store import claim
from frankensweep.db.workers import Holding, beat
from frankensweep.evals.registry import eval_key, get_eval
from frankensweep.search import Plan
from frankensweep.sweeps.config import sweep_config
from frankensweep.sweeps.rounds import advance
from frankensweep.sweeps.status import eta_seconds, liveness, progress
from frankensweep.testing.sweeps import seed_sweep, store_scores
from frankensweep.worker.dispatch import hand_over, lost_rounds
from frankensweep.worker.heartbeat import Heartbeat
from frankensweep.worker.runner import plan_units

PPL = {"kind": "perplexity", "corpus": "pydoc_data.topics", "tokens": 288, "ctx": 96}
HALVING = {"kind": "halving", "eta": 3, "rungs": 3, "budget": None, "seed": 0}
#: the base model and 9 overlap-like plans of a 30-layer model
PLANS = ["0-30"] + [f"0-{10 + i},{5 + i}-30" for i in range(9)]
SECONDS_PER_LAYER_TOKEN = 2e-5


class Broker:
    """Records what would be sent to the ``gpu`` queue (the real one: tests/test_fleet.py)."""

    def __init__(self) -> None:
        self.sent: list[list] = []

    def send_task(self, name: str, args: list, queue: str) -> None:
        assert (name, queue) == ("frankensweep.run_unit", "gpu")
        self.sent.append(args)


@pytest.fixture
def sessions(database_url):
    engine = make_engine(database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


def settings(**fields) -> Settings:
    return Settings(broker_url="redis://127.0.0.1:1/0", **fields)  # scaled; never connected


def seed(sessions, strategy: dict | None = None, fidelity: int = 0) -> tuple[int, list[int]]:
    """A running sweep of PLANS (the first the reference, at the top level); its ids."""
    top = 2 if strategy else 0
    with sessions() as s:
        sweep = seed_sweep(
            s,
            [(Plan.parse(p), {}) for p in PLANS],
            lambda i, plan: {"fidelity": top if i == 0 else fidelity},
            name="fleet",
            model="/models/m.gguf",
            num_layers=30,
            space={"kind": "explicit", "plans": PLANS[1:]},
            evals=[PPL],
            strategy=strategy or {"kind": "grid"},
            status="running",
        )
        s.commit()
        return sweep.id, [c.id for c in sweep.candidates]


def backdate(sessions, seconds: float, name: str | None = None, ids=()) -> None:
    """Make a worker's last beat, and these candidates' claims, ``seconds`` old."""
    then = utcnow() - timedelta(seconds=seconds)
    with sessions() as s:
        if name:
            s.execute(update(Worker).where(Worker.name == name).values(last_seen=then))
        if ids:
            s.execute(update(Candidate).where(Candidate.id.in_(ids)).values(started_at=then))
        s.commit()


def test_plan_units_spread_a_small_round_over_the_workers_alive():
    candidates = [Candidate(id=i, plan=p) for i, p in enumerate(PLANS[1:], 1)]
    assert [len(u) for u in plan_units(candidates[:8], 8)] == [8]  # one worker: one unit
    assert [len(u) for u in plan_units(candidates[:8], 8, workers=2)] == [4, 4]
    assert [len(u) for u in plan_units(candidates[:3], 8, workers=5)] == [1, 1, 1]
    assert [len(u) for u in plan_units(candidates, 2, workers=2)] == [2, 2, 2, 2, 1]
    units = plan_units(candidates, 8, workers=3)
    assert sorted(i for u in units for i in u) == list(range(1, 10))
    # each unit is a run of the depth-first order: shared prefixes stay together
    order = sorted(candidates, key=lambda c: Plan.parse(c.plan).layers())
    assert [i for u in units for i in u] == [c.id for c in order]


def test_a_silent_worker_is_named_then_its_unit_handed_over_once(sessions):
    sweep_id, ids = seed(sessions)
    with sessions() as s:
        claim(s, ids[1:3], "celery:alive")
        claim(s, ids[3:5], "celery:silent")
    with sessions() as s:  # two processes of the fleet beat, each holding its unit
        for name, pid, claimant, held in (
            ("w1@host", 101, "celery:alive", ids[1:3]),
            ("w2@host", 102, "celery:silent", ids[3:5]),
        ):
            beat(s, name, "host", pid, Holding(claimant, sweep_id, tuple(held)), "perplexity")
    backdate(sessions, 120, ids=ids[1:5])  # both claims are old; only w2 went quiet
    config = settings()

    backdate(sessions, 30, name="w2@host")  # 30 s: silent, not yet past the 60 s grace
    with sessions() as s:
        live = liveness(s, s.get(Sweep, sweep_id), config)
    states = {w.name: (w.state, w.candidates) for w in live.workers}
    assert states == {"w1@host": ("working", ids[1:3]), "w2@host": ("silent", ids[3:5])}
    assert live.alive == 2
    assert live.stall == (
        f"stalled: worker w2@host (pid 102) holds candidates {ids[3]}, {ids[4]} and has not "
        "been heard from for 30 s; its unit goes to another worker once it has been silent for "
        "60 s (FRANKENSWEEP_HEARTBEAT_GRACE)"
    )
    broker = Broker()
    assert hand_over(sessions, broker, config) == 0 and broker.sent == []  # within the grace

    backdate(sessions, 90, name="w2@host")  # past the grace
    with sessions() as s:
        live = liveness(s, s.get(Sweep, sweep_id), config)
    assert [w.state for w in live.workers] == ["working", "lost"] and live.alive == 1
    assert live.stall.startswith("stalled: worker w2@host (pid 102) holds candidates")
    assert "its unit is handed to another worker at the API's next check" in live.stall

    assert hand_over(sessions, broker, config) == 2
    assert [(sent_to, sorted(unit)) for sent_to, unit in broker.sent] == [
        (sweep_id, sorted(ids[3:5]))
    ]
    assert hand_over(sessions, broker, config) == 0 and len(broker.sent) == 1  # once
    with sessions() as s:
        by_id = {c.id: c for c in s.get(Sweep, sweep_id).candidates}
        assert [(by_id[i].status, by_id[i].claimed_by, by_id[i].attempts) for i in ids[3:5]] == [
            ("pending", None, 1)
        ] * 2  # attempts kept: the next claim counts the death
        assert {by_id[i].status for i in ids[1:3]} == {"running"}  # the live worker keeps its
        # just sent again: not mistaken for a round the broker lost
        assert s.get(Sweep, sweep_id).dispatched_at > utcnow() - timedelta(seconds=30)
        live = liveness(s, s.get(Sweep, sweep_id), config)
    lost = next(w for w in live.workers if w.name == "w2@host")
    assert (lost.state, lost.candidates) == ("lost", [])
    assert lost.activity.endswith("its unit went to another worker")
    assert live.stall is None


def test_no_worker_alive_is_a_stall_in_scaled_mode_only(sessions):
    sweep_id, _ = seed(sessions)
    with sessions() as s:
        sweep = s.get(Sweep, sweep_id)
        scaled = liveness(s, sweep, settings(heartbeat_grace=60))
        embedded = liveness(s, sweep, Settings(broker_url=None))
    assert scaled.stall == (
        "stalled: no worker has been heard from in the last 60 s; start one with "
        "`frankensweep worker` (same FRANKENSWEEP_DATABASE_URL and FRANKENSWEEP_BROKER_URL)"
    )
    assert embedded.stall is None and embedded.workers == []


def layer_tokens(plan: str, spec) -> int:
    return len(Plan.parse(plan)) * get_eval(spec.kind).work(spec)


def test_eta_counts_later_rounds_at_the_measured_cost_per_layer_token(sessions):
    """Halving at the end of its first rung: 9 screened, the reference still to run at full
    fidelity; to come, 3 plans at level 1 and 1 at level 2 (pruned ones counted where they ran)."""
    sweep_id, _ = seed(sessions, HALVING)
    with sessions() as s:
        sweep = s.get(Sweep, sweep_id)
        levels = sweep_config(sweep).levels
        assert eta_seconds(s, sweep) is None  # no cost measured yet
        for c in sweep.candidates[1:]:
            c.status = "done"
        scores = [
            (Plan.parse(p), eval_key(levels[0].rank_by), "perplexity", {"perplexity": 10.0 + i}, {})
            for i, p in enumerate(PLANS[1:])
        ]
        for plan, key, kind, metrics, details in scores:  # each took its layer-tokens x the rate
            seconds = layer_tokens(str(plan), levels[0].rank_by) * SECONDS_PER_LAYER_TOKEN
            store_scores(s, sweep.model, [(plan, key, kind, metrics, details)], seconds)
        s.commit()

        mean = sum(len(Plan.parse(p)) for p in PLANS[1:]) / 9  # positions of plans to come
        work = get_eval("perplexity").work  # scored tokens per position
        w1, full = work(levels[1].rank_by), work(levels[2].rank_by)
        now = len(Plan.parse("0-30")) * full  # the reference, this round, at full fidelity
        one = now + 3 * mean * w1 + mean * full
        assert eta_seconds(s, sweep, workers=1) == pytest.approx(one * SECONDS_PER_LAYER_TOKEN)
        # two workers: the reference runs alone; level 1's three plans split over both
        two = now + 3 * mean * w1 / 2 + mean * full
        assert eta_seconds(s, sweep, workers=2) == pytest.approx(two * SECONDS_PER_LAYER_TOKEN)

        p = progress(s, sweep)
        assert (p.finished, p.total, p.estimate, p.unit) == (9, 14, True, "evaluations")
        assert (p.round, p.rounds, p.round_label) == (1, 3, "round 1 of 3")
        assert p.pct == math.floor(100 * 9 / 14)


def test_promotion_keeps_attempts(sessions):
    """A promoted candidate starts its new level with no claims (the give-up rule's count),
    while ``attempts`` keeps every claim so far."""
    sweep_id, ids = seed(sessions, HALVING)
    with sessions() as s:
        claim(s, ids[1:], "celery:rung1")
        claim(s, ids[1:2], "celery:rung1")  # its worker died once: claimed again
        sweep = s.get(Sweep, sweep_id)
        level = sweep_config(sweep).levels[0]
        for i, c in enumerate(sweep.candidates[1:]):
            c.status = "done"
            metrics = {"perplexity": 10.0 + i}
            store_scores(
                s, sweep.model, [(Plan.parse(c.plan), level.rank_key, "perplexity", metrics, {})]
            )
        sweep.candidates[0].status = "done"
        s.commit()
    promoted = advance(sessions, sweep_id)
    assert promoted and ids[1] in promoted and len(promoted) == 3
    with sessions() as s:
        first = s.get(Candidate, ids[1])
        assert (first.status, first.fidelity, first.attempts, first.level_attempts) == (
            "pending",
            1,
            2,
            0,
        )
        p = progress(s, s.get(Sweep, sweep_id))
    assert (p.finished, p.total, p.round_label) == (10, 14, "round 2 of 3")


def dead_pid() -> int:
    """The pid of a process that has exited (not reused this soon)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_heartbeat_rows_of_a_process(sessions):
    """A heartbeat beats from a thread, drops its name's rows whose process is gone, and a unit
    delivered again (same claimant) is left to another process that holds it and lives."""
    hb = Heartbeat(sessions, "w1@host", every=0.1, grace=60)
    gone = dead_pid()
    with sessions() as s:
        beat(s, "w1@host", hb.host, gone, None)  # this worker's earlier process, killed
        beat(s, "w2@far", "far", 555, Holding("celery:far", 1, (1,)))
        beat(s, "w3@near", hb.host, gone, Holding("celery:killed", 1, (2,)))
        beat(s, "w4@near", hb.host, os.getppid(), Holding("celery:near", 1, (3,)))
    hb.start()
    try:
        with sessions() as s:
            mine = s.scalars(select(Worker).where(Worker.name == "w1@host")).all()
            assert [w.pid for w in mine] == [os.getpid()]
            first = mine[0].last_seen
        time.sleep(0.5)
        with sessions() as s:
            assert s.scalar(select(Worker.last_seen).where(Worker.pid == os.getpid())) > first
        assert hb.held_elsewhere("celery:far")  # another host, heard from just now
        assert hb.held_elsewhere("celery:near")  # this host, its process alive
        assert not hb.held_elsewhere("celery:killed")  # this host, its process gone
        assert not hb.held_elsewhere("celery:nobody")
        backdate(sessions, 120, name="w2@far")
        assert not hb.held_elsewhere("celery:far")  # silent past the grace
    finally:
        hb.stop()
    with sessions() as s:
        assert s.scalar(select(Worker).where(Worker.pid == os.getpid())) is None


def test_a_round_the_broker_lost_is_sent_again(sessions):
    """Pending candidates sent 2 minutes ago that nobody took, while a worker idled for the
    grace (it would have taken a queued unit): lost. Not while every worker is busy or the idle
    one only just finished, unless the visibility timeout has passed with nothing running."""
    sweep_id, ids = seed(sessions)
    config = settings(heartbeat_grace=60)
    with sessions() as s:
        s.get(Sweep, sweep_id).dispatched_at = utcnow() - timedelta(seconds=120)
        claim(s, ids[:1], "celery:busy")  # the reference's unit runs; the others never came
        beat(s, "w1@host", "host", 101, Holding("celery:busy", sweep_id, tuple(ids[:1])))
        beat(s, "w2@host", "host", 102, None)
        assert lost_rounds(s, config) == []  # w2 has idled for a moment only
        s.execute(
            update(Worker)
            .where(Worker.name == "w2@host")
            .values(since=utcnow() - timedelta(seconds=90))
        )
        s.commit()
        assert [sw.id for sw in lost_rounds(s, config)] == [sweep_id]
        s.execute(update(Worker).where(Worker.name == "w2@host").values(claimant="celery:other"))
        s.commit()
        assert lost_rounds(s, config) == []  # every worker busy: the units may be queued
        s.execute(update(Worker).values(last_seen=utcnow() - timedelta(hours=1)))
        s.get(Sweep, sweep_id).dispatched_at = utcnow() - timedelta(hours=7)
        s.commit()
        assert lost_rounds(s, config) == []  # past the visibility timeout, but one runs
        s.get(Candidate, ids[0]).status = "done"
        s.commit()
        assert [sw.id for sw in lost_rounds(s, config)] == [sweep_id]  # nothing runs: lost
