"""Strategies in the service as users run it: Celery workers advancing rounds, and restarts.

Scaled: the API and two Celery workers on PostgreSQL and Redis run a halving sweep and a TPE
sweep of a tiny model; each round is stored by whichever unit ends it (two workers race for it)
and sent from the task. Embedded: a halving sweep of SmolLM2 whose server is SIGKILLed in the
middle of a round resumes after a restart and ends exactly as an uninterrupted one would.
"""

from __future__ import annotations

import httpx
import optuna
import pytest
from test_strategy_sweeps import KEPT, PPL, SPACE, check_halving, perplexity_key, stored

from frankensweep.core.net import free_port
from frankensweep.db import upgrade
from frankensweep.models import smollm2_path
from frankensweep.strategies.model_based import study_name
from frankensweep.testing.models import tiny_model_dir
from frankensweep.testing.processes import (
    Processes,
    embedded_env,
    poll_sweep,
    scaled_env,
    wait_done,
    wait_for_health,
    wait_for_log,
)

pytestmark = pytest.mark.slow

TINY_SPACE = {"kind": "overlap", "slice_size": [3, 6], "jump": [1, 3], "last_slice": [1, 4]}
TINY_KEPT = 31  # plans of TINY_SPACE on 12 layers
TINY_PPL = {"kind": "perplexity", "corpus": "pydoc_data.topics", "tokens": 512, "ctx": 128}


def test_celery_workers_advance_halving_and_tpe_rounds(tmp_path, postgres_server, redis_server):
    database_url = postgres_server.create_database("strategies_celery")
    upgrade(database_url)
    model = tiny_model_dir(tmp_path / "tiny", layers=12)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = scaled_env(
        database_url,
        redis_server.url,
        FRANKENSWEEP_UNIT_SIZE="4",
        FRANKENSWEEP_PATH_ROOTS=str(tmp_path),
    )
    procs = Processes(tmp_path, env)
    try:
        procs.start("api", "serve", "--port", str(port))
        for name in ("w1", "w2"):
            procs.start(name, "worker", "--concurrency", "1", "--name", f"{name}@%h")
            wait_for_log(procs, name, "ready.")
        wait_for_health(url, procs)
        body = {"name": "celery", "model": str(model), "space": TINY_SPACE, "evals": [TINY_PPL]}
        halving = {"kind": "halving", "eta": 3, "rungs": 3}
        tpe = {"kind": "tpe", "budget": 10, "batch": 4, "seed": 5}
        ids = []
        tpe_evals = [TINY_PPL | {"tokens": 384}]  # its own scores: none shared with halving's
        for strategy, evals in ((halving, [TINY_PPL]), (tpe, tpe_evals)):
            payload = body | {"strategy": strategy, "evals": evals}
            created = httpx.post(f"{url}/api/sweeps", json=payload)
            assert created.status_code == 201, created.text
            ids.append(created.json()["id"])
        for sweep_id in ids:
            assert wait_done(url, sweep_id, procs, timeout=600)["status"] == "done"
        keys = [perplexity_key(56, 56), perplexity_key(128, 128), perplexity_key(512, 128)]
        check_halving(database_url, ids[0], TINY_KEPT, keys)  # rungs of 31, 11 and 4
        sweep, candidates, _ = stored(database_url, ids[1])
        plans = [c for c in candidates if not c.is_reference]
        assert len(plans) == 10 and sweep.round == 2 and len({c.plan for c in plans}) == 10
        assert all(c.status == "done" for c in candidates)
        study = optuna.load_study(study_name=study_name(ids[1]), storage=database_url)
        complete = {t.number: t.value for t in study.trials if t.state.name == "COMPLETE"}
        assert {c.trial for c in plans} == set(complete)
        assert not [t for t in study.trials if t.state.name == "RUNNING"]
    finally:
        procs.stop_all()


def test_embedded_halving_killed_mid_round_resumes_after_restart(tmp_path):
    database_url = f"sqlite:///{tmp_path / 'halving.db'}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    procs = Processes(tmp_path, embedded_env(database_url, FRANKENSWEEP_UNIT_SIZE="4"))
    try:
        procs.start("api", "serve", "--port", str(port))
        wait_for_health(url, procs)
        body = {
            "name": "restart",
            "model": str(smollm2_path()),
            "space": SPACE,
            "evals": [PPL],
            "strategy": {"kind": "halving", "eta": 3, "rungs": 3},
        }
        sweep_id = httpx.post(f"{url}/api/sweeps", json=body, timeout=120).json()["id"]

        def mid_round_two(sweep: dict) -> bool:  # rung 2 started, some of it done
            return sweep["round"] == 1 and sweep["counts"]["pending"] < 12

        poll_sweep(url, sweep_id, procs, mid_round_two, timeout=900, every=0.2)
        procs.kill("api")
        procs.start("api2", "serve", "--port", str(port))
        wait_for_health(url, procs)
        assert wait_done(url, sweep_id, procs)["status"] == "done"
        keys = [perplexity_key(28, 28), perplexity_key(85, 85), perplexity_key(256, 128)]
        check_halving(database_url, sweep_id, KEPT, keys)
    finally:
        procs.stop_all()
