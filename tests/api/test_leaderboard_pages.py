"""The leaderboard a page at a time: limit/offset, global ranks, cached boards kept fresh."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from frankensweep.api.app import create_app
from frankensweep.core.config import Settings
from frankensweep.db import Candidate
from frankensweep.db.store import upsert_result
from frankensweep.evals.registry import eval_key, parse_eval
from frankensweep.search import Plan, RysSpace, enumerate_space
from frankensweep.testing.sweeps import seed_sweep, store_scores

PPL = {"kind": "perplexity", "corpus": "pydoc_data.topics", "tokens": 256, "ctx": 128}
MODEL = "/models/base.gguf"
SCORED = 230  # of the 465 non-reference RYS plans of a 30-layer model


def store(app, status: str) -> tuple[int, list[str]]:
    """A 30-layer RYS sweep: reference + 465 plans, the first SCORED of them with perplexity."""
    plans = [Plan.base(30)] + [p.plan for p in enumerate_space(RysSpace(num_layers=30)).points]
    plans = list(dict.fromkeys(plans))  # the base plan appears in the space too
    key = eval_key(parse_eval(PPL))
    with app.state.sessions() as session:
        sweep = seed_sweep(
            session,
            [(plan, {}) for plan in plans],
            lambda i, plan: {"status": "done" if i <= SCORED else "pending"},
            name="pages",
            model=MODEL,
            num_layers=30,
            space={"kind": "rys"},
            evals=[PPL],
            strategy={"kind": "grid"},
            status=status,
        )
        # later plans rank first
        scores = [
            (plan, key, "perplexity", {"perplexity": 1000.0 - i}, None)
            for i, plan in enumerate(plans[: SCORED + 1])
        ]
        store_scores(session, MODEL, scores)
        session.commit()
        return sweep.id, [str(p) for p in plans]


@pytest.fixture
def client(database_url):
    with TestClient(create_app(Settings(database_url=database_url), dispatch=False)) as c:
        yield c


def test_pages_cover_the_board_with_its_own_ranks(client):
    sweep_id, plans = store(client.app, "done")
    url = f"/api/sweeps/{sweep_id}/leaderboard"
    first = client.get(url).json()
    assert first["total"] == len(plans) - 1 and first["offset"] == 0
    assert len(first["rows"]) == 100  # the default page
    assert [r["rank"] for r in first["rows"]] == list(range(1, 101))
    assert first["rows"][0]["plan"] == plans[SCORED]  # lowest perplexity
    assert first["reference"]["plan"] == "0-30"

    rows = []
    for offset in range(0, first["total"], 150):
        page = client.get(url, params={"limit": 150, "offset": offset}).json()
        assert page["offset"] == offset and page["total"] == first["total"]
        rows += page["rows"]
    assert len(rows) == first["total"]
    assert [r["rank"] for r in rows[:SCORED]] == list(range(1, SCORED + 1))
    assert all(r["rank"] is None for r in rows[SCORED:])
    assert rows[:100] == first["rows"]
    # the dashboard's download is the whole board: the pages put together
    assert rows == client.get(f"/sweeps/{sweep_id}/leaderboard.json").json()["rows"]

    past = client.get(url, params={"offset": 10_000}).json()
    assert past["rows"] == [] and past["total"] == first["total"]
    for bad in ({"limit": 0}, {"limit": 1001}, {"offset": -1}):
        assert client.get(url, params=bad).status_code == 422


def test_a_running_sweeps_board_follows_its_candidates(client):
    sweep_id, plans = store(client.app, "running")
    url = f"/api/sweeps/{sweep_id}/leaderboard"
    assert client.get(url, params={"limit": 1}).json()["rows"][0]["plan"] == plans[SCORED]
    # a pending candidate finishes with the best score: the cached board is not served again
    late = Plan.parse(plans[-1])
    with client.app.state.sessions() as session:
        upsert_result(
            session,
            model=MODEL,
            plan=str(late),
            plan_digest=late.digest,
            eval_key=eval_key(parse_eval(PPL)),
            eval_kind="perplexity",
            metrics={"perplexity": 1.0},
            details=None,
            seconds=1.0,
        )
        candidate = session.query(Candidate).filter_by(sweep_id=sweep_id, plan=str(late)).one()
        candidate.status = "done"
        candidate.attempts = 1
        session.commit()
    board = client.get(url, params={"limit": 1}).json()
    assert board["rows"][0]["plan"] == str(late) and board["rows"][0]["rank"] == 1
