"""Faults on real servers: each ends with every candidate scored exactly once and nothing lost.

Scaled mode (``frankensweep serve`` with a broker, two ``frankensweep worker`` processes, real
PostgreSQL and Redis) on a tiny random Llama saved to disk (tests/processes.py): a unit of two
plans takes a few seconds, long enough to hit it mid-evaluation, short enough to keep each test
around a minute. Faults: a whole worker SIGKILLed (main process and pool) mid-unit; the API
SIGKILLed mid-sweep and started again; Redis stopped for 10 s; PostgreSQL stopped for 10 s.
Failed evaluations (embedded server): a NaN loss and a real allocation failure (out of memory)
mark their candidates failed with the reason, and the work goes on.
"""

from __future__ import annotations

import resource
import time
from pathlib import Path

import httpx
import pytest
import redis as redis_client

from frankensweep.core.net import free_port
from frankensweep.db import upgrade
from frankensweep.search import Plan
from frankensweep.testing.models import tiny_model_dir
from frankensweep.testing.processes import (
    Processes,
    check_exactly_once,
    embedded_env,
    scaled_env,
    start_scaled,
    stored,
    wait_done,
    wait_for_health,
    wait_running,
)
from frankensweep.testing.processes import submit_plans as submit
from frankensweep.testing.services import PostgresServer, RedisServer

pytestmark = pytest.mark.slow

#: 7 plans of the tiny 6-layer model (+ the base model): 4 units of 2 plans with unit size 2
PLANS = ["0-4,2-6", "0-3,1-6", "0-5,3-6", "0-2,1-6", "0-4,3-6", "0-3,2-6", "0-5,4-6"]
EVAL = {"kind": "perplexity", "corpus": "pydoc_data.topics", "tokens": 2048, "ctx": 256}
NAN_LAYER = 3
#: plans of the model whose layer 3 is NaN: three avoid it, two (and the base model) run it
NAN_PLANS = ["0-3,4-6", "0-2,1-3,4-6", "0-3,1-3,4-6", "0-4,2-6", "0-5,3-6"]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """A folder of tiny models: ``tiny`` (finite), ``nan`` (layer 3 NaN), ``wide`` (512k vocab)."""
    root = tmp_path_factory.mktemp("fault-models")
    tiny_model_dir(root / "tiny")
    tiny_model_dir(root / "nan", nan_layer=NAN_LAYER)
    tiny_model_dir(root / "wide", layers=2, vocab_size=1 << 19, hidden_size=32)
    return root


def running_task_ids(database_url: str, sweep_id: int) -> set[str]:
    candidates, _ = stored(database_url, sweep_id)
    return {c.claimed_by.removeprefix("celery:") for c in candidates if c.status == "running"}


def worker_running(procs: Processes, task_ids: set[str]) -> str:
    """The name of the worker whose log shows it received one of these tasks."""
    for name in procs.procs:
        if name.startswith("worker") and any(t in procs.log(name, 100_000) for t in task_ids):
            return name
    raise AssertionError(f"no worker received {task_ids}:\n{procs.logs()}")


def check_all_done(url: str, database_url: str, sweep_id: int) -> list:
    """Every candidate done with exactly one result row; the API serves the ranking."""
    candidates = check_exactly_once(database_url, sweep_id)
    assert all(c.status == "done" for c in candidates), [(c.plan, c.error) for c in candidates]
    board = httpx.get(f"{url}/api/sweeps/{sweep_id}/leaderboard", timeout=10).json()
    assert board["reference"]["status"] == "done"
    assert [r["rank"] for r in board["rows"]] == list(range(1, len(PLANS) + 1))
    return candidates


def test_worker_sigkilled_whole_mid_unit_is_redelivered(tmp_path, postgres_server, models):
    """The whole worker (main process and pool) dies: Redis delivers its unit again after the
    visibility timeout, to the other worker, which resumes the unit's claims."""
    database_url = postgres_server.create_database("faults_worker")
    upgrade(database_url)
    env = {
        "FRANKENSWEEP_UNIT_SIZE": "2",
        "FRANKENSWEEP_TASK_TIME_LIMIT": "60",
        "FRANKENSWEEP_VISIBILITY_TIMEOUT": "70",
        # the broker's own redelivery is what this test is about: no heartbeat handover first
        # (that path, with default limits, is tests/test_fleet.py's)
        "FRANKENSWEEP_HEARTBEAT_GRACE": "600",
        "FRANKENSWEEP_PATH_ROOTS": str(models),
    }
    with RedisServer() as redis:
        procs = Processes(tmp_path, scaled_env(database_url, redis.url, **env))
        try:
            url = start_scaled(procs, free_port())
            sweep_id = submit(url, models / "tiny", PLANS, [EVAL])
            wait_running(url, sweep_id, procs)
            tasks = running_task_ids(database_url, sweep_id)
            victim = worker_running(procs, tasks)
            procs.kill(victim)  # SIGKILL to the worker's whole process group
            killed_at = time.monotonic()
            survivor = "worker2" if victim == "worker1" else "worker1"

            final = wait_done(url, sweep_id, procs, timeout=300)
            recovered = time.monotonic() - killed_at
            assert final["status"] == "done", final
            candidates = check_all_done(url, database_url, sweep_id)
            # the killed unit ran again, on the survivor, under the same task id (claimant)
            assert any(t in procs.log(survivor, 100_000) for t in tasks)
            assert max(c.attempts for c in candidates) == 2
            print(f"whole worker SIGKILL: sweep done {recovered:.1f} s after the kill")
        finally:
            procs.stop_all()
            postgres_server.drop_database("faults_worker")


def test_api_sigkilled_mid_sweep_and_restarted(tmp_path, postgres_server, models):
    """Workers do not need the API: the sweep goes on while it is down; restarted, it serves it."""
    database_url = postgres_server.create_database("faults_api")
    upgrade(database_url)
    env = {"FRANKENSWEEP_UNIT_SIZE": "2", "FRANKENSWEEP_PATH_ROOTS": str(models)}
    with RedisServer() as redis:
        procs = Processes(tmp_path, scaled_env(database_url, redis.url, **env))
        try:
            port = free_port()
            url = start_scaled(procs, port)
            sweep_id = submit(url, models / "tiny", PLANS, [EVAL])
            wait_running(url, sweep_id, procs)
            procs.kill("api")
            killed_at = time.monotonic()
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"{url}/healthz", timeout=2)
            time.sleep(3)  # units keep being evaluated with no API
            procs.start("api2", "serve", "--port", str(port))
            wait_for_health(url, procs)
            back = time.monotonic() - killed_at

            final = wait_done(url, sweep_id, procs, timeout=300)
            assert final["status"] == "done", final
            candidates = check_all_done(url, database_url, sweep_id)
            # nothing was evaluated twice: the restarted API did not send the units again
            assert max(c.attempts for c in candidates) == 1
            done = time.monotonic() - killed_at
            print(f"API SIGKILL: serving again after {back:.1f} s, sweep done after {done:.1f} s")
        finally:
            procs.stop_all()
            postgres_server.drop_database("faults_api")


def test_redis_stopped_for_10_seconds_mid_sweep(tmp_path, postgres_server, models):
    """Redis with its append-only file (as in docker-compose.yml) stops and starts again: the
    workers reconnect and the queued and in-flight units are all evaluated, once."""
    database_url = postgres_server.create_database("faults_redis")
    upgrade(database_url)
    env = {"FRANKENSWEEP_UNIT_SIZE": "1", "FRANKENSWEEP_PATH_ROOTS": str(models)}
    with RedisServer(appendonly=True) as redis:
        procs = Processes(tmp_path, scaled_env(database_url, redis.url, **env))
        try:
            url = start_scaled(procs, free_port())
            sweep_id = submit(url, models / "tiny", PLANS, [EVAL])
            wait_running(url, sweep_id, procs)
            redis.stop()  # SIGTERM: Redis writes its append-only file and exits
            stopped_at = time.monotonic()
            # the API does not need the broker to serve reads
            while time.monotonic() - stopped_at < 10:
                assert httpx.get(f"{url}/api/sweeps/{sweep_id}", timeout=5).status_code == 200
                time.sleep(1)
            redis.start()
            started_at = time.monotonic()

            final = wait_done(url, sweep_id, procs, timeout=300)
            assert final["status"] == "done", final
            check_all_done(url, database_url, sweep_id)
            logs = procs.log("worker1", 100_000) + procs.log("worker2", 100_000)
            assert "Connection to broker lost" in logs or "Cannot connect" in logs
            # nothing left in the broker to run again: the in-flight units were acknowledged
            broker = redis_client.Redis.from_url(redis.url)
            assert (broker.llen("gpu"), broker.hlen("unacked")) == (0, 0)
            broker.close()
            done = time.monotonic() - started_at
            print(f"Redis down 10 s: sweep done {done:.1f} s after Redis came back")
        finally:
            procs.stop_all()
            postgres_server.drop_database("faults_redis")


def test_sweep_submitted_while_redis_is_down_is_sent_when_it_returns(
    tmp_path, postgres_server, models
):
    """The API stores a sweep the broker cannot take yet (201 all the same); its reconciler
    sends the units once Redis is back, and every candidate is evaluated once."""
    database_url = postgres_server.create_database("faults_submit_redis")
    upgrade(database_url)
    env = {
        "FRANKENSWEEP_UNIT_SIZE": "2",
        "FRANKENSWEEP_PATH_ROOTS": str(models),
        "FRANKENSWEEP_RECONCILE_SECONDS": "2",
    }
    with RedisServer(appendonly=True) as redis:
        procs = Processes(tmp_path, scaled_env(database_url, redis.url, **env))
        try:
            url = start_scaled(procs, free_port())
            redis.stop()
            sweep_id = submit(url, models / "tiny", PLANS, [EVAL])
            time.sleep(5)  # two reconciler passes fail meanwhile: nothing is lost or run
            sweep = httpx.get(f"{url}/api/sweeps/{sweep_id}", timeout=10).json()
            assert sweep["status"] == "queued" and sweep["counts"]["pending"] == len(PLANS) + 1
            assert "will retry" in procs.log("api", 100_000)
            redis.start()
            final = wait_done(url, sweep_id, procs, timeout=300)
            assert final["status"] == "done", final
            check_all_done(url, database_url, sweep_id)
        finally:
            procs.stop_all()
            postgres_server.drop_database("faults_submit_redis")


def test_postgresql_stopped_for_10_seconds_mid_sweep(tmp_path, models):
    """PostgreSQL stops (immediate, like a crash) and starts again: the API answers 503 while it
    is down, the workers retry their units with backoff, and every candidate ends scored once."""
    env = {"FRANKENSWEEP_UNIT_SIZE": "1", "FRANKENSWEEP_PATH_ROOTS": str(models)}
    with PostgresServer() as postgres, RedisServer() as redis:
        database_url = postgres.url
        upgrade(database_url)
        procs = Processes(tmp_path, scaled_env(database_url, redis.url, **env))
        try:
            url = start_scaled(procs, free_port())
            sweep_id = submit(url, models / "tiny", PLANS, [EVAL])
            wait_running(url, sweep_id, procs)
            postgres.stop()
            stopped_at = time.monotonic()
            answers = set()
            while time.monotonic() - stopped_at < 10:
                for path in ("/healthz", f"/api/sweeps/{sweep_id}"):
                    response = httpx.get(f"{url}{path}", timeout=15)
                    answers.add(response.status_code)
                    assert response.status_code == 503, response.text
                    assert "database unavailable" in response.json()["detail"]
                    assert response.headers["retry-after"]
                time.sleep(1)
            postgres.start()
            started_at = time.monotonic()

            final = wait_done(url, sweep_id, procs, timeout=300)
            assert final["status"] == "done", final
            assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
            check_all_done(url, database_url, sweep_id)
            logs = procs.log("worker1", 100_000) + procs.log("worker2", 100_000)
            assert "OperationalError" in logs and "Retry in" in logs
            done = time.monotonic() - started_at
            print(f"PostgreSQL down 10 s: sweep done {done:.1f} s after it came back")
        finally:
            procs.stop_all()


def _limit_address_space() -> None:
    """The server may map 8 GiB: a bigger allocation fails at once (ENOMEM), as on a full GPU."""
    limit = 8 << 30
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def test_failed_evaluations_are_marked_failed_and_the_work_goes_on(tmp_path, models):
    """NaN loss: the plans through a NaN layer fail with that reason, the others are scored.
    Out of memory: a window whose logits need 8 GiB (4096 tokens x 524288 vocab x 4 bytes) in a
    server limited to 8 GiB of address space fails with the allocator's error; the server goes
    on with the next sweep."""
    database_url = f"sqlite:///{tmp_path / 'failed.db'}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # the memory planner would refuse the OOM sweep at submission (its own tests cover that):
    # a worker memory beyond the estimate lets it reach the allocator, the failure under test
    env = embedded_env(
        database_url,
        FRANKENSWEEP_UNIT_SIZE="2",
        FRANKENSWEEP_PATH_ROOTS=str(models),
        FRANKENSWEEP_WORKER_MEMORY="1024GiB",
    )
    procs = Processes(tmp_path, env)
    try:
        procs.start("api", "serve", "--port", str(port), preexec_fn=_limit_address_space)
        wait_for_health(url, procs)
        oom_eval = {**EVAL, "tokens": 4096, "ctx": 4096}
        oom_id = submit(url, models / "wide", ["0-1,0-2", "0-2,1-2"], [oom_eval])
        nan_id = submit(url, models / "nan", NAN_PLANS, [EVAL])

        oom = wait_done(url, oom_id, procs, timeout=300)
        assert oom["status"] == "failed", oom
        candidates = check_exactly_once(database_url, oom_id)
        assert len(candidates) == 3 and all(c.status == "failed" for c in candidates)
        for c in candidates:
            assert c.error.startswith("perplexity: "), c.error
            assert "can't allocate memory" in c.error or "out of memory" in c.error, c.error

        final = wait_done(url, nan_id, procs, timeout=300)
        assert final["status"] == "done", final
        candidates = check_exactly_once(database_url, nan_id)
        for c in candidates:
            if NAN_LAYER in Plan.parse(c.plan).layers():
                assert c.status == "failed", c.plan
                assert c.error.startswith("perplexity: ") and " nan " in c.error, c.error
            else:
                assert c.status == "done", (c.plan, c.error)
        assert final["counts"]["done"] == 3 and final["counts"]["failed"] == 3, final["counts"]
    finally:
        procs.stop_all()
