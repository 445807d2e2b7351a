"""Real service processes for tests and benchmarks: the API and Celery workers as users start them.

Start ``frankensweep serve`` and ``frankensweep worker`` processes (each logging to a file), wait
for them, and check a sweep's outcome in the database.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import yaml
from sqlalchemy import create_engine, select

from frankensweep.core.net import wait_healthy
from frankensweep.core.status import FINISHED_SWEEP
from frankensweep.db import Candidate, Result, Sweep
from frankensweep.search import Plan, recipe_to_plan

BIN = Path(sys.executable).parent


#: the ``frankensweep`` command of this environment
EXE = str(BIN / "frankensweep")


def cli_env() -> dict[str, str]:
    """The environment command-line tests run in: offline, a wide terminal."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}


def run_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """``frankensweep ARGS`` as a process (offline, wide terminal); exit 0 asserted if ``check``."""
    proc = subprocess.run([EXE, *args], capture_output=True, text=True, timeout=600, env=cli_env())
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


class Processes:
    """Started processes, each logging to a file; all stopped at the end."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp, self.env = tmp, env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str, preexec_fn=None) -> psutil.Process:
        """Start ``frankensweep *args`` in a session of its own; ``preexec_fn`` runs in the child
        before it starts (say to set a resource limit)."""
        log = open(self.tmp / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [str(BIN / "frankensweep"), *args],
            env=self.env,
            stdout=log,
            stderr=log,
            start_new_session=True,
            preexec_fn=preexec_fn,
        )
        self.procs[name] = proc
        return psutil.Process(proc.pid)

    def log(self, name: str, tail: int = 3000) -> str:
        return (self.tmp / f"{name}.log").read_text()[-tail:]

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n{self.log(n)}" for n in self.procs)

    def kill(self, name: str) -> None:
        """SIGKILL a process and everything in its session (a worker's pool too)."""
        proc = self.procs[name]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


def embedded_env(database_url: str, **extra: str) -> dict[str, str]:
    """The environment of an embedded server (no broker) on ``database_url``."""
    env = {
        **os.environ,
        "FRANKENSWEEP_DATABASE_URL": database_url,
        "FRANKENSWEEP_DEVICE": "cpu",
        "HF_HUB_OFFLINE": "1",
        "TQDM_DISABLE": "1",
        **extra,
    }
    env.pop("FRANKENSWEEP_BROKER_URL", None)
    return env


def scaled_env(database_url: str, broker_url: str, **extra: str) -> dict[str, str]:
    """The environment of a scaled deployment: the API and Celery workers on ``broker_url``."""
    return {
        **embedded_env(database_url),
        "FRANKENSWEEP_BROKER_URL": broker_url,
        "FRANKENSWEEP_DTYPE": "float32",
        **extra,
    }


def wait_for_health(url: str, procs: Processes, timeout: float = 120) -> None:
    if not wait_healthy(url, timeout, every=0.3):
        raise AssertionError(f"API did not come up:\n{procs.log('api')}")


def wait_for_log(procs: Processes, name: str, text: str, timeout: float = 120) -> None:
    """Wait until ``text`` appears in a process's log (say a worker's "ready.")."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in (procs.tmp / f"{name}.log").read_text():
            return
        if procs.procs[name].poll() is not None:
            break
        time.sleep(0.3)
    raise AssertionError(f"{name} never logged {text!r}:\n{procs.log(name)}")


def poll_sweep(url: str, sweep_id: int, procs: Processes, until, timeout: float, every: float):
    """Read the sweep every ``every`` seconds until ``until(sweep)``; return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sweep = httpx.get(f"{url}/api/sweeps/{sweep_id}", timeout=10).json()
        if until(sweep):
            return sweep
        time.sleep(every)
    raise AssertionError(
        f"sweep {sweep_id} still {sweep['status']}: {sweep['counts']}\n{procs.logs()}"
    )


def wait_done(url: str, sweep_id: int, procs: Processes, timeout: float = 900) -> dict:
    return poll_sweep(url, sweep_id, procs, lambda s: s["status"] in FINISHED_SWEEP, timeout, 1.0)


def wait_running(url: str, sweep_id: int, procs: Processes, timeout: float = 300) -> dict:
    """Wait until some candidate of the sweep is being evaluated; return the sweep."""
    return poll_sweep(url, sweep_id, procs, lambda s: s["counts"]["running"] > 0, timeout, 0.2)


def busy_pool_child(workers: list[psutil.Process]) -> psutil.Process | None:
    """The pool process of a worker that is computing right now (high CPU)."""
    children = [c for w in workers for c in w.children()]
    for c in children:
        c.cpu_percent(None)
    time.sleep(0.5)
    busy = [c for c in children if c.cpu_percent(None) > 50]
    return busy[0] if busy else None


def stored(database_url: str, sweep_id: int) -> tuple[list, list]:
    """The sweep's candidates and every result row of its model key, read directly (the
    results of other sweeps on other models, running meanwhile, are left out)."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            candidates = list(conn.execute(select(Candidate).where(Candidate.sweep_id == sweep_id)))
            row = conn.execute(
                select(Sweep.model, Sweep.model_key).where(Sweep.id == sweep_id)
            ).one()
            model = row.model_key or row.model  # the key results are stored under
            query = select(Result.plan_digest, Result.eval_key).where(Result.model == model)
            results = list(conn.execute(query))
    finally:
        engine.dispose()
    return candidates, results


def check_exactly_once(database_url: str, sweep_id: int) -> list:
    """Every candidate finished, and one result row per done candidate: none missing, none extra."""
    candidates, results = stored(database_url, sweep_id)
    assert all(c.status in ("done", "failed") for c in candidates), [
        (c.plan, c.status) for c in candidates
    ]
    done = sorted(c.digest for c in candidates if c.status == "done")
    assert sorted(r.plan_digest for r in results) == done
    return candidates


def check_outcome(url: str, database_url: str, sweep_id: int) -> list:
    """The 7-plan SmolLM2 sweep of ``test_service_processes``: all done, ranked, exactly once."""
    board = httpx.get(f"{url}/api/sweeps/{sweep_id}/leaderboard", timeout=10).json()
    assert board["reference"]["plan"] == "0-30" and board["reference"]["status"] == "done"
    assert len(board["rows"]) == 7 and all(r["status"] == "done" for r in board["rows"])
    values = [r["scores"]["perplexity"] for r in board["rows"]]
    assert values == sorted(values) and [r["rank"] for r in board["rows"]] == list(range(1, 8))
    recipe = httpx.get(f"{url}/api/candidates/{board['rows'][0]['candidate_id']}/recipe.yaml")
    assert recipe_to_plan(recipe.text).plan == Plan.parse(board["rows"][0]["plan"])
    assert yaml.safe_load(recipe.text)["merge_method"] == "passthrough"
    candidates, results = stored(database_url, sweep_id)
    # every candidate scored exactly once: one result row per plan, none missing, none extra
    assert sorted(r.plan_digest for r in results) == sorted(c.digest for c in candidates)
    return candidates
