"""`frankensweep submit` and `frankensweep leaderboard` as real processes against a live server."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
import uvicorn
import yaml
from test_cli import run

from frankensweep.api.app import create_app
from frankensweep.core.config import Settings
from frankensweep.core.net import free_port
from frankensweep.models import smollm2_path


@pytest.fixture
def server(tmp_path):
    """The embedded service (SQLite, in-process worker) on a free loopback port."""
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'cli.db'}", device="cpu")
    port = free_port()
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    serving = uvicorn.Server(config)
    thread = threading.Thread(target=serving.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not serving.started:
        time.sleep(0.1)
    assert httpx.get(f"{url}/healthz").status_code == 200
    yield url
    serving.should_exit = True
    thread.join(30)


def test_submit_with_a_strategy_then_page_through_the_leaderboard(server, tmp_path):
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(
        yaml.safe_dump(
            {
                "name": "cli",
                "model": str(smollm2_path()),
                "space": {"kind": "overlap", "slice_size": [8, 14, 2], "jump": 3, "last_slice": 8},
                "evals": [{"kind": "perplexity", "tokens": 128, "ctx": 64}],
            }
        )
    )
    submitted = run(
        "submit", str(sweep_file), "--url", server, "--strategy", "random", "--budget", "3"
    )
    sweep_id = int(submitted.stdout.strip())
    assert f"sweep {sweep_id}: 4 candidates" in submitted.stderr  # 3 drawn + the base model
    assert f"sweep {sweep_id} done" in submitted.stderr
    sweep = httpx.get(f"{server}/api/sweeps/{sweep_id}").json()
    assert sweep["strategy"] == {"kind": "random", "budget": 3, "seed": 0}

    page = run("leaderboard", str(sweep_id), "--url", server, "--limit", "2")
    assert "rows 1-2 of 3: --offset 2 for more" in page.stderr
    assert "reference" in page.stdout
    rest = run("leaderboard", str(sweep_id), "--url", server, "--offset", "2", "--json")
    board = yaml.safe_load(rest.stdout)
    assert [row["rank"] for row in board["rows"]] == [3] and board["total"] == 3

    bad = run("submit", str(sweep_file), "--url", server, "--strategy", "tpe", check=False)
    assert bad.returncode == 2 and "budget" in bad.stderr  # the API's 422, one line
