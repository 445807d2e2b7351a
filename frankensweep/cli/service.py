"""Service commands of the CLI: serve, worker, migrate, submit, leaderboard, demo."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.table import Table

from frankensweep.cli.app import UrlOpt, app, err, fail, out, progress_bar, quiet_libraries
from frankensweep.client import DEFAULT_URL, Client
from frankensweep.core.net import free_port, is_loopback, wait_healthy
from frankensweep.core.status import FINISHED_SWEEP


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
) -> None:
    """Run the API (and, without FRANKENSWEEP_BROKER_URL, the embedded worker)."""
    import uvicorn

    from frankensweep.api.app import create_app
    from frankensweep.core.config import get_settings

    settings = get_settings()
    if not is_loopback(host) and settings.api_token is None:
        fail(
            f"refusing to bind {host} without FRANKENSWEEP_API_TOKEN: set a token or bind 127.0.0.1"
        )
    mode = "embedded worker" if settings.embedded else "Celery workers"
    err.print(f"frankensweep on http://{host}:{port} ({mode}); API docs at /docs", highlight=False)
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level="warning",
        timeout_keep_alive=5,  # an idle connection is closed after 5 s
        limit_concurrency=settings.max_connections,
    )


@app.command()
def worker(
    concurrency: Annotated[int, typer.Option(help="Units evaluated at once (1 per GPU).")] = 1,
    name: Annotated[
        str | None,
        typer.Option(help="Worker node name, e.g. gpu0@%h (default: worker-<pid>@<host>)."),
    ] = None,
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO",
) -> None:
    """Run a Celery worker on queue 'gpu' (needs FRANKENSWEEP_BROKER_URL)."""
    from frankensweep.core.config import get_settings

    if not get_settings().broker_url:
        fail(
            "FRANKENSWEEP_BROKER_URL is not set: a worker needs a Redis URL like redis://host:6379/0"
        )
    from frankensweep.worker.celery_app import make_celery

    # a name of its own per process (Celery's default, celery@host, is the same for every
    # worker of a host): the sweep's status says which worker holds which unit
    name = name or f"worker-{os.getpid()}@%h"
    argv = ["worker", "-Q", "gpu", "--concurrency", str(concurrency), "--loglevel", loglevel]
    make_celery().worker_main([*argv, "-n", name])


def leaderboard_table(board: dict, limit: int | None = None) -> Table:
    metric = board["metric"]
    better = "higher" if board["higher_is_better"] else "lower"
    table = Table(title=f"sweep {board['sweep_id']}: {metric} ({better} is better)")
    for name in ("rank", "candidate", "plan", "layers", metric, "vs base", "status", "reached"):
        table.add_column(name, overflow="fold" if name == "plan" else "ellipsis")
    ref = board.get("reference")
    ref_value = (ref or {}).get("scores", {}).get(metric)
    rows = board["rows"][:limit] if limit else board["rows"]
    for row in ([ref] if ref else []) + rows:
        value = row["scores"].get(metric)
        is_ref = row is ref
        delta = ""
        if is_ref:
            delta = "reference"
        elif value is not None and ref_value:
            delta = f"{(value / ref_value - 1) * 100:+.1f}%"
        table.add_row(
            "base" if is_ref else (str(row["rank"]) if row["rank"] else "-"),
            str(row["candidate_id"]),
            row["plan"],
            str(row["positions"]),
            f"{value:.4g}" if value is not None else "",
            delta,
            row["status"],
            _reached(row),
            style="bold cyan" if is_ref else None,
        )
    return table


def _reached(row: dict) -> str:
    """Where a candidate below full fidelity stopped, with its score there."""
    if row.get("fidelity_label", "full") == "full":
        return ""
    partial = ", ".join(f"{k} {v:.4g}" for k, v in row.get("partial_scores", {}).items() if k)
    return f"{row['fidelity_label']}" + (f" ({partial})" if partial else "")


def wait_for(client: Client, sweep_id: int, poll: float = 1.0) -> dict:
    """Poll a sweep with a progress bar (evaluations, as the API and dashboard count them)
    until it finishes; a stall is printed once when it starts; return the final state."""
    sweep = client.sweep(sweep_id)
    stall = None
    with progress_bar() as bar:
        task = bar.add_task(f"sweep {sweep_id}", total=sweep["progress"]["total"])
        while True:
            p = sweep["progress"]
            bar.update(
                task,
                total=p["total"],  # an estimate until the strategy's last round
                completed=p["finished"],
                description=f"sweep {sweep_id} {sweep['status']} ({p['round_label']})",
            )
            if sweep.get("stall") and sweep["stall"] != stall:
                bar.console.print(sweep["stall"], style="yellow", highlight=False, markup=False)
            stall = sweep.get("stall")
            if sweep["status"] in FINISHED_SWEEP:
                return sweep
            time.sleep(poll)
            sweep = client.sweep(sweep_id)


@app.command()
def submit(
    sweep_file: Annotated[Path, typer.Argument(help="YAML or JSON: name, model, space, evals.")],
    url: UrlOpt = DEFAULT_URL,
    wait: Annotated[bool, typer.Option(help="Show progress until the sweep ends.")] = True,
    strategy: Annotated[
        str | None,
        typer.Option(
            help="grid, random, halving, tpe, cmaes or surrogate (overrides the file's strategy)."
        ),
    ] = None,
    budget: Annotated[
        int | None,
        typer.Option(help="Plans the strategy may evaluate (random, tpe, cmaes, surrogate)."),
    ] = None,
) -> None:
    """Submit a sweep; print its id, then a progress bar until it is done."""
    if not sweep_file.is_file():
        fail(f"sweep file not found: {sweep_file}")
    try:
        payload = yaml.safe_load(sweep_file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        fail(f"{sweep_file} is not valid YAML: {str(exc).splitlines()[0]}")
    if not isinstance(payload, dict):
        fail(f"{sweep_file} must hold a mapping with name, model, space and evals")
    if strategy is not None or budget is not None:
        chosen = payload.get("strategy", "grid")
        chosen = dict(chosen) if isinstance(chosen, dict) else {"kind": chosen}
        if strategy is not None:
            chosen = {"kind": strategy}
        if budget is not None:
            chosen["budget"] = budget
        payload["strategy"] = chosen
    client = Client(url)
    created = client.submit(payload)
    out.print(created["id"], markup=False)
    summary = created["space"]["summary"]
    err.print(
        f"sweep {created['id']}: {created['candidates']} candidates ({summary})",
        highlight=False,
        markup=False,
    )
    if wait:
        final = wait_for(client, created["id"])
        err.print(f"sweep {created['id']} {final['status']}", highlight=False)
        err.print(leaderboard_table(client.leaderboard(created["id"]), limit=20))


@app.command()
def leaderboard(
    sweep_id: Annotated[int, typer.Argument(help="The sweep id.")],
    metric: Annotated[str | None, typer.Option(help="Rank by this metric.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON.")] = False,
    limit: Annotated[int, typer.Option(help="Rows per page (at most 1000).")] = 100,
    offset: Annotated[int, typer.Option(help="Skip this many rows.")] = 0,
    url: UrlOpt = DEFAULT_URL,
) -> None:
    """Print a sweep's ranked candidates, with the base model as the reference row."""
    board = Client(url).leaderboard(sweep_id, metric, limit=limit, offset=offset)
    if as_json:
        out.print(json.dumps(board), markup=False)
        return
    out.print(leaderboard_table(board))
    shown = offset + len(board["rows"])
    if shown < board.get("total", shown):
        err.print(f"rows {offset + 1}-{shown} of {board['total']}: --offset {shown} for more")


DEMO_SWEEP = {
    "name": "demo: SmolLM2 overlap sweep",
    "space": {
        "kind": "overlap",
        "slice_size": [8, 14, 2],
        "jump": [3, 5],
        "last_slice": [6, 8, 2],
        "filters": {"max_repeats": 2, "min_last_slice": 6, "min_jump": 3},
    },
    "evals": [{"kind": "perplexity", "corpus": "pydoc_data.topics", "tokens": 1024, "ctx": 256}],
}


@app.command()
def demo(
    port: Annotated[int, typer.Option(help="Port of the embedded server (0: any free).")] = 8000,
    database: Annotated[Path, typer.Option(help="SQLite file of the demo.")] = Path(
        "frankensweep-demo.db"
    ),
    keep: Annotated[bool, typer.Option(help="Keep serving until Ctrl-C.")] = True,
) -> None:
    """Start the embedded service, run a real SmolLM2 overlap sweep, print the ranking."""
    import uvicorn

    from frankensweep.api.app import create_app
    from frankensweep.core.config import Settings
    from frankensweep.models import smollm2_path

    quiet_libraries()
    port = port or free_port()
    settings = Settings(database_url=f"sqlite:///{database.resolve()}", broker_url=None)
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    if not wait_healthy(url, timeout=60, alive=thread.is_alive, every=0.1):
        fail(f"the server could not start on port {port}: try --port 0")
    client = Client(url)
    created = client.submit({**DEMO_SWEEP, "model": str(smollm2_path())})
    err.print(
        f"sweep {created['id']}: {created['candidates']} candidates, {created['space']['summary']}",
        highlight=False,
        markup=False,
    )
    final = wait_for(client, created["id"])
    board = client.leaderboard(created["id"])
    out.print(leaderboard_table(board))
    if board["rows"] and board["rows"][0]["rank"]:
        winner = board["rows"][0]
        _winner_leaves(client, winner, database.with_name("frankensweep-demo-winner.gguf"))
    out.print(
        "SmolLM2-135M is far too small to gain from self-merging (gains appear at ~34B and up):\n"
        "the demo shows the mechanism and the ranking, not a better model.\n",
        markup=False,
    )
    out.print(f"sweep {final['status']}. API: {url}/api/sweeps  docs: {url}/docs", markup=False)
    if keep:
        out.print("serving until Ctrl-C", markup=False)
        try:
            while thread.is_alive():
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
    server.should_exit = True
    thread.join(10)


def _winner_leaves(client: Client, winner: dict, gguf_path: Path) -> None:
    """The demo's winner as a GGUF file (quantized tensors passed through) and as a recipe."""
    from frankensweep.export import staged_output
    from frankensweep.export.mergekit import gguf_note
    from frankensweep.models import smollm2_path

    candidate = winner["candidate_id"]
    with staged_output(gguf_path, force=True) as staged:
        size = client.download(f"/api/candidates/{candidate}/export.gguf", staged)
    out.print(
        f"\nwinner {winner['plan']} ({winner['positions']} layers) as a GGUF file: {gguf_path} "
        f"({size / 2**20:.1f} MiB, the base file's own Q4_1/Q8_0 tensors, repeated layers "
        f"written again: a file for llama.cpp)\n"
        f"  frankensweep export --candidate {candidate} --format gguf --out winner.gguf\n",
        markup=False,
    )
    out.print("and as a mergekit recipe:\n", markup=False)
    out.print(client.recipe(candidate), markup=False)
    out.print(f"note: {gguf_note(str(smollm2_path()), None)}\n", markup=False)


@app.command()
def migrate(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Bring the database at FRANKENSWEEP_DATABASE_URL to the latest schema (idempotent)."""
    from frankensweep.core.config import get_settings
    from frankensweep.db import upgrade

    url = get_settings().database_url
    upgrade(url, revision)
    err.print(f"database at {url.split('@')[-1]} is at {revision}", highlight=False)
