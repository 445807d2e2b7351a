"""Load: concurrent clients reading the leaderboard of a 10,000-candidate sweep on PostgreSQL.

A throwaway PostgreSQL (``tests/services.py``'s ``PostgresServer``, loopback) holds one finished
sweep of 10,000 real overlap plans of an 80-layer model, each with a perplexity and an EQ-Bench
result (keyed by the real plan digests and ``eval_key`` of the sweep's evals), stored through
the ORM and ``upsert_result``. The API runs as a real server process (``uvicorn
frankensweep.api.app:create_app --factory``) on 127.0.0.1; 50 asyncio clients (one keep-alive
connection each) request ``GET /api/sweeps/{id}/leaderboard`` (its default page) at the
dashboard's pace (every 2 s), then back to back (saturation). Latency is measured per request
on the client side, after a warm-up that is not counted.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from benchmarks import Section, fmt_seconds, median, percentile, step
from frankensweep.core.net import free_port, wait_healthy
from frankensweep.testing.services import PostgresServer

ROOT = Path(__file__).resolve().parent.parent
MODEL = "meta-llama/Llama-2-70b-hf"  # a name only: nothing is loaded
NUM_LAYERS = 80
CANDIDATES = 10_000
P99_TARGET = 0.100  # seconds
EVALS = [
    {"kind": "perplexity", "corpus": "pydoc_data.topics", "tokens": 2048, "ctx": 512},
    {"kind": "eq_bench", "questions": "pbevan11/EQ-Bench", "limit": None, "max_gen_toks": 80},
]


@dataclass(frozen=True)
class Settings:
    """How much a run measures."""

    clients: int  # concurrent clients, one connection each
    requests: int  # measured requests per client (after the warm-up)
    warmup: int  # requests per client not counted
    workers: int  # uvicorn worker processes
    polls: int  # requests per client at the dashboard's pace (after one not counted)


FULL = Settings(clients=50, requests=40, warmup=4, workers=2, polls=15)
QUICK = Settings(clients=50, requests=10, warmup=2, workers=2, polls=5)
POLL_SECONDS = 2.0  # the dashboard's live pages poll the JSON API this often (dashboard.js)


# -- the database --------------------------------------------------------------------------------


def plans(count: int) -> list:
    """``count`` distinct real overlap plans of an ``NUM_LAYERS``-layer model, with their params."""
    from frankensweep.search import OverlapSpace, stream_space

    space = OverlapSpace(
        num_layers=NUM_LAYERS, slice_size="4:40", jump="1:30", last_slice="2:40", first_slice="2:40"
    )
    points = []
    for point in stream_space(space):
        points.append(point)
        if len(points) == count:
            return points
    raise RuntimeError(f"the space gives only {len(points)} plans, {count} wanted")


def seed(url: str, count: int) -> int:
    """Store a finished sweep of ``count`` candidates + the reference, every one scored."""
    import random

    from frankensweep.db import make_engine, make_sessionmaker, upgrade
    from frankensweep.evals.registry import eval_key, parse_eval
    from frankensweep.search import Plan
    from frankensweep.testing.sweeps import seed_sweep, store_scores

    upgrade(url)
    rng = random.Random(0)

    def metrics(kind: str) -> dict[str, float]:
        if kind == "perplexity":
            return {"perplexity": rng.uniform(5, 50), "nll": rng.uniform(1, 4)}
        return {"eqbench": rng.uniform(0, 80), "percent_parseable": 100.0}

    specs = [parse_eval(e) for e in EVALS]
    keys = [(eval_key(spec), spec.kind) for spec in specs]
    points = [(Plan.base(NUM_LAYERS), {})] + [(p.plan, p.params) for p in plans(count)]
    engine = make_engine(url)
    try:
        with make_sessionmaker(engine)() as session:
            sweep = seed_sweep(
                session,
                points,
                lambda i, plan: {"status": "done", "attempts": 1},
                name=f"load {count}",
                model=MODEL,
                num_layers=NUM_LAYERS,
                space={"kind": "overlap", "num_layers": NUM_LAYERS},
                evals=EVALS,
                strategy={"kind": "grid"},
                status="done",
            )
            store_scores(
                session,
                MODEL,
                (
                    (plan, key, kind, metrics(kind), None)
                    for plan, _params in points
                    for key, kind in keys
                ),
            )
            session.commit()
            return sweep.id
    finally:
        engine.dispose()


# -- the server ----------------------------------------------------------------------------------


@contextmanager
def api_server(database_url: str, workers: int):
    """``uvicorn`` serving the API on 127.0.0.1 with ``workers`` processes; yields its URL."""
    port = free_port()
    env = {
        **os.environ,
        "FRANKENSWEEP_DATABASE_URL": database_url,
        "FRANKENSWEEP_BROKER_URL": "",
        "TQDM_DISABLE": "1",
    }
    env.pop("FRANKENSWEEP_API_TOKEN", None)
    log_path = Path(tempfile.mkdtemp(prefix="fs-load-")) / "uvicorn.log"
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "frankensweep.api.app:create_app",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        if not wait_healthy(url, 60, alive=lambda: process.poll() is None, every=0.1):
            raise RuntimeError(
                f"uvicorn did not answer in 60 s (exit {process.poll()}): {log_path}"
            )
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


# -- the clients ---------------------------------------------------------------------------------


class Connection:
    """One keep-alive HTTP/1.1 connection doing GETs: a minimal client, so that the clients'
    own CPU (they share the machine with the server) stays small next to the server's."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> bytes:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        request = f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n\r\n"
        self.writer.write(request.encode("ascii"))
        head = await self.reader.readuntil(b"\r\n\r\n")
        status, *fields = head.decode("latin-1").split("\r\n")
        if status.split(" ", 2)[1] != "200":
            raise RuntimeError(f"GET {path}: {status}")
        length = next(
            int(value)
            for name, _, value in (f.partition(":") for f in fields)
            if name.lower() == "content-length"
        )
        return await self.reader.readexactly(length)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def client_loop(
    url: str, path: str, warmup: int, count: int, out: list[float], every: float = 0.0
) -> None:
    """``warmup + count`` GETs, back to back, or one every ``every`` seconds (from a random
    phase, like dashboards opened at different times)."""
    parts = httpx.URL(url)
    connection = Connection(parts.host, parts.port)
    try:
        if every:
            await asyncio.sleep(random.uniform(0, every))
        due = time.perf_counter()
        for i in range(warmup + count):
            start = time.perf_counter()
            await connection.get(path)
            elapsed = time.perf_counter() - start
            if i >= warmup:
                out.append(elapsed)
            if every:
                due += every
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
    finally:
        connection.close()


async def load(url: str, path: str, settings: Settings) -> tuple[list[float], float]:
    """Latencies of every measured request, and the wall-clock of the measured part."""
    latencies: list[list[float]] = [[] for _ in range(settings.clients)]
    # warm-up together, then measure together: every client starts measuring at once
    await asyncio.gather(*(client_loop(url, path, settings.warmup, 0, out) for out in latencies))
    start = time.perf_counter()
    await asyncio.gather(*(client_loop(url, path, 0, settings.requests, out) for out in latencies))
    return [x for out in latencies for x in out], time.perf_counter() - start


async def dashboards(url: str, path: str, settings: Settings) -> list[float]:
    """Latencies of ``clients`` dashboards each polling ``path`` every POLL_SECONDS."""
    latencies: list[list[float]] = [[] for _ in range(settings.clients)]
    await asyncio.gather(
        *(client_loop(url, path, 1, settings.polls, out, POLL_SECONDS) for out in latencies)
    )
    return [x for out in latencies for x in out]


def run(quick: bool) -> Section:
    settings = QUICK if quick else FULL
    section = Section(name="load", summary="", quick=quick)
    section.summary = (
        f"{settings.clients} concurrent clients reading the leaderboard of a sweep of "
        f"{CANDIDATES:,} stored candidates (real overlap plans of an {NUM_LAYERS}-layer model, "
        "two results each) from a real uvicorn server on PostgreSQL, loopback."
    )
    with PostgresServer() as pg:
        step(f"PostgreSQL on port {pg.port}: seeding {CANDIDATES:,} candidates")
        start = time.perf_counter()
        sweep_id = seed(pg.url, CANDIDATES)
        seeded = time.perf_counter() - start
        path = f"/api/sweeps/{sweep_id}/leaderboard"
        with api_server(pg.url, settings.workers) as url:
            first = httpx.get(f"{url}{path}", timeout=60)
            first.raise_for_status()
            board = first.json()
            step(
                f"{settings.clients} clients x {settings.requests} requests "
                f"({settings.warmup} warm-up each) on {settings.workers} uvicorn worker(s)"
            )
            polled = asyncio.run(dashboards(url, path, settings))
            step(f"{settings.clients} clients back to back: saturation")
            latencies, wall = asyncio.run(load(url, path, settings))
            step("the same load on GET /healthz (SELECT 1): the floor of server and machine")
            floor, floor_wall = asyncio.run(load(url, "/healthz", settings))
    rows = len(board["rows"])
    section.settings = {
        "clients": str(settings.clients),
        "requests": f"{settings.requests} per client, measured ({settings.warmup} warm-up first)",
        "uvicorn workers": str(settings.workers),
        "candidates": f"{CANDIDATES:,} + the reference, 2 results each",
        "response": f"default page: {rows} rows of {board.get('total', '?')}, "
        f"{len(first.content) / 1024:.0f} KiB",
    }
    p99 = percentile(polled, 99)
    pace = f"{settings.clients} dashboards polling every {POLL_SECONDS:.0f} s"
    section.add(f"{pace}: requests measured", f"{len(polled):,}")
    section.add(f"{pace}: latency, median", fmt_seconds(median(polled)))
    section.add(
        f"{pace}: latency, p99", fmt_seconds(p99), f"< {fmt_seconds(P99_TARGET)}", p99 < P99_TARGET
    )
    section.add(f"{pace}: latency, max", fmt_seconds(max(polled)))
    busy = f"{settings.clients} clients back to back (saturation)"
    section.add(f"{busy}: requests measured", f"{len(latencies):,}")
    section.add(f"{busy}: latency, median", fmt_seconds(median(latencies)))
    section.add(f"{busy}: latency, p95", fmt_seconds(percentile(latencies, 95)))
    section.add(f"{busy}: latency, p99", fmt_seconds(percentile(latencies, 99)))
    section.add(f"{busy}: latency, max", fmt_seconds(max(latencies)))
    section.add(f"{busy}: throughput", f"{len(latencies) / wall:.0f} requests/s")
    section.add("GET /healthz under the same load: median", fmt_seconds(median(floor)))
    section.add("GET /healthz under the same load: p99", fmt_seconds(percentile(floor, 99)))
    section.add(
        "GET /healthz under the same load: throughput", f"{len(floor) / floor_wall:.0f} requests/s"
    )
    section.add("seeding (ORM + upsert_result)", fmt_seconds(seeded))
    section.notes = [
        f"Two loads: {settings.clients} clients polling at the dashboard's pace (every "
        f"{POLL_SECONDS:.0f} s, random phases; the target applies here), and the same clients "
        "back to back with no pause, which measures capacity rather than latency.",
        "Back to back (closed loop): each client sends its next request when the previous "
        "answer is read, so mean latency = clients / throughput; p99 < 100 ms with 50 clients "
        "needs > 500 requests/s from the server, the clients and PostgreSQL sharing the "
        "machine's CPUs.",
        "Clients are asyncio streams speaking HTTP/1.1 keep-alive (about 0.1 ms of CPU per "
        "request; httpx took 3 ms, more than the server); every answer's status is checked.",
        f"{settings.workers} uvicorn workers for 2 CPUs (one per CPU; 1 worker measured the "
        "same within noise). The server runs in embedded mode; the sweep is finished, so its "
        "worker thread stays idle.",
        "The first request of a board computes it (ranking every candidate: a few seconds for "
        "10,000); it is kept per process until the sweep changes, so warm-up is excluded.",
        "Before pages and the board cache (same data, one client): the whole board, 10,000 "
        "rows and 4.8 MB of JSON, took 3.8-5.9 s per request (20 chunked result queries "
        "loading 20,000 ORM rows, Plan.parse per row); 50 clients ran into the 30 s timeout.",
    ]
    return section
