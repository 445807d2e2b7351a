"""The service as users run it: real processes, real PostgreSQL and Redis, two Celery workers.

Scaled mode: ``frankensweep serve`` with FRANKENSWEEP_BROKER_URL, two ``frankensweep worker``
processes, a sweep of 7 overlap plans of SmolLM2 (+ the base model), one worker's pool process
SIGKILLed mid-candidate. Embedded mode: the same sweep on ``frankensweep serve`` with SQLite.
"""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest

from frankensweep.core.net import free_port
from frankensweep.db import upgrade
from frankensweep.models import smollm2_path
from frankensweep.testing.processes import (
    Processes,
    busy_pool_child,
    check_outcome,
    embedded_env,
    wait_done,
    wait_for_health,
)

pytestmark = pytest.mark.slow

SWEEP = {
    "name": "processes",
    "space": {"kind": "overlap", "slice_size": [8, 14, 2], "jump": [3, 5, 2], "last_slice": 8},
    "evals": [{"kind": "perplexity", "corpus": "pydoc_data.topics", "tokens": 512, "ctx": 128}],
}


def test_celery_workers_on_postgresql_survive_a_sigkill(tmp_path, postgres_server, redis_server):
    database_url = postgres_server.create_database("scaled")
    upgrade(database_url)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "FRANKENSWEEP_DATABASE_URL": database_url,
        "FRANKENSWEEP_BROKER_URL": redis_server.url,
        "FRANKENSWEEP_UNIT_SIZE": "2",
        "FRANKENSWEEP_DEVICE": "cpu",
        "FRANKENSWEEP_DTYPE": "float32",
        "HF_HUB_OFFLINE": "1",
        "TQDM_DISABLE": "1",
    }
    procs = Processes(tmp_path, env)
    try:
        procs.start("api", "serve", "--port", str(port))
        workers = [
            procs.start(f"worker{i}", "worker", "--concurrency", "1", "--name", f"w{i}@%h")
            for i in (1, 2)
        ]
        wait_for_health(url, procs)
        created = httpx.post(
            f"{url}/api/sweeps", json={**SWEEP, "model": str(smollm2_path())}, timeout=120
        )
        assert created.status_code == 201, created.text
        sweep_id = created.json()["id"]

        # wait until a candidate is being evaluated, then SIGKILL the pool process computing it
        victim = None
        deadline = time.monotonic() + 300
        while victim is None and time.monotonic() < deadline:
            sweep = httpx.get(f"{url}/api/sweeps/{sweep_id}").json()
            if sweep["counts"]["running"]:
                victim = busy_pool_child(workers)
            else:
                time.sleep(0.5)
        assert victim is not None, procs.log("worker1") + procs.log("worker2")
        victim.send_signal(signal.SIGKILL)

        final = wait_done(url, sweep_id, procs)
        assert final["status"] == "done", final
        assert final["counts"]["done"] == 8
        candidates = check_outcome(url, database_url, sweep_id)
        # the killed unit was delivered again and resumed; the others ran once
        assert max(c.attempts for c in candidates) >= 2
        assert "WorkerLostError" in procs.log("worker1") + procs.log("worker2")
    finally:
        procs.stop_all()
        postgres_server.drop_database("scaled")


def test_embedded_server_on_sqlite(tmp_path):
    database_url = f"sqlite:///{tmp_path / 'embedded.db'}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    procs = Processes(tmp_path, embedded_env(database_url))
    try:
        procs.start("api", "serve", "--port", str(port))
        wait_for_health(url, procs)
        assert httpx.get(f"{url}/healthz").json()["mode"] == "embedded"
        created = httpx.post(
            f"{url}/api/sweeps", json={**SWEEP, "model": str(smollm2_path())}, timeout=120
        )
        sweep_id = created.json()["id"]
        assert wait_done(url, sweep_id, procs)["status"] == "done"
        check_outcome(url, database_url, sweep_id)
    finally:
        procs.stop_all()


def test_embedded_server_killed_mid_sweep_resumes_after_restart(tmp_path):
    database_url = f"sqlite:///{tmp_path / 'restart.db'}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    procs = Processes(tmp_path, embedded_env(database_url, FRANKENSWEEP_UNIT_SIZE="2"))
    try:
        procs.start("api", "serve", "--port", str(port))
        wait_for_health(url, procs)
        body = {**SWEEP, "model": str(smollm2_path())}
        sweep_id = httpx.post(f"{url}/api/sweeps", json=body, timeout=120).json()["id"]
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            counts = httpx.get(f"{url}/api/sweeps/{sweep_id}").json()["counts"]
            if counts["done"] >= 2:
                break
            time.sleep(0.3)
        assert 2 <= counts["done"] < 8, counts
        procs.kill("api")  # mid-sweep: some candidates done, one unit running
        procs.start("api2", "serve", "--port", str(port))
        wait_for_health(url, procs)
        assert wait_done(url, sweep_id, procs)["status"] == "done"
        check_outcome(url, database_url, sweep_id)
    finally:
        procs.stop_all()
