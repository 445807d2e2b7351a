"""The REST API in embedded mode, on SQLite and PostgreSQL, with the real SmolLM2."""

from __future__ import annotations

import pytest
import yaml
from fastapi.testclient import TestClient

from frankensweep.api.app import create_app
from frankensweep.core.config import Settings
from frankensweep.models import smollm2_path
from frankensweep.search import Plan, recipe_to_plan
from frankensweep.testing.sweeps import count_rows
from frankensweep.testing.sweeps import wait_sweep as wait_done

pytestmark = pytest.mark.slow

PPL = {"kind": "perplexity", "corpus": "pydoc_data.topics", "tokens": 256, "ctx": 128}
OVERLAP = {"kind": "overlap", "slice_size": [8, 14, 2], "jump": [3, 5, 2], "last_slice": 8}


def sweep_body(**overrides) -> dict:
    return {"name": "t", "model": str(smollm2_path()), "space": OVERLAP, "evals": [PPL]} | overrides


@pytest.fixture
def client(database_url):
    settings = Settings(database_url=database_url, broker_url=None, device="cpu", dtype="float32")
    with TestClient(create_app(settings)) as c:
        yield c


def test_sweep_runs_to_a_ranked_leaderboard_and_recipes(client, database_url):
    assert client.get("/healthz").json()["status"] == "ok"
    created = client.post("/api/sweeps", json=sweep_body())
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["candidates"] == 7 + 1  # 7 overlap plans + the base model as reference
    sweep = wait_done(client, body["id"])
    assert sweep["status"] == "done"
    assert sweep["counts"]["done"] == 8 and sweep["eta_seconds"] == 0
    assert [s["id"] for s in client.get("/api/sweeps").json()] == [body["id"]]

    board = client.get(f"/api/sweeps/{body['id']}/leaderboard").json()
    assert board["metric"] == "perplexity" and board["higher_is_better"] is False
    assert board["reference"]["plan"] == "0-30"
    values = [row["scores"]["perplexity"] for row in board["rows"]]
    assert [row["rank"] for row in board["rows"]] == list(range(1, 8))
    assert values == sorted(values)
    assert all(v > board["reference"]["scores"]["perplexity"] for v in values)  # 135M: no gain

    best = board["rows"][0]
    recipe = client.get(f"/api/candidates/{best['candidate_id']}/recipe.yaml")
    assert recipe.status_code == 200
    assert recipe_to_plan(recipe.text).plan == Plan.parse(best["plan"])
    assert yaml.safe_load(recipe.text)["slices"][0]["sources"][0]["model"] == str(smollm2_path())
    detail = client.get(f"/api/candidates/{best['candidate_id']}").json()
    assert detail["status"] == "done" and detail["results"][0]["kind"] == "perplexity"
    assert detail["scores"]["perplexity"] == best["scores"]["perplexity"]

    # an identical sweep reuses every stored score: no new result rows
    _, _, results_before = count_rows(database_url)
    again = client.post("/api/sweeps", json=sweep_body(name="again")).json()
    assert wait_done(client, again["id"])["status"] == "done"
    assert count_rows(database_url)[2] == results_before == 8
    board2 = client.get(f"/api/sweeps/{again['id']}/leaderboard").json()
    assert [r["scores"] for r in board2["rows"]] == [r["scores"] for r in board["rows"]]

    # delete removes the sweep and its candidates, keeps the shared results
    assert client.delete(f"/api/sweeps/{again['id']}").status_code == 204
    assert client.get(f"/api/sweeps/{again['id']}").status_code == 404
    assert count_rows(database_url) == (1, 8, 8)


@pytest.mark.parametrize(
    ("body", "loc", "message"),
    [
        (sweep_body(model="/no/such/model.gguf"), ["body", "model"], "model file not found"),
        (
            sweep_body(space={**OVERLAP, "slice_size": 40}),
            ["body", "space"],
            "slice_size=40 is longer",
        ),
        (
            sweep_body(space={"kind": "explicit", "plans": ["0-16,8-40"]}),
            ["body", "space", "plans"],
            'slice 2 "8-40"',
        ),
        (
            sweep_body(space={"kind": "explicit", "plans": []}),
            ["body", "space"],
            "plans or recipes",
        ),
        (
            sweep_body(evals=[{**PPL, "corpus": "/no/such.txt"}]),
            ["body", "evals", 0],
            "corpus not found",
        ),
        (sweep_body(evals=[]), ["body", "evals"], "at least 1"),
        (
            sweep_body(evals=[{"kind": "eq_bench", "batch_size": 0}]),
            ["body", "evals", 0, "eq_bench", "batch_size"],
            "greater than or equal to 1",
        ),
        (
            sweep_body(evals=[{"kind": "eq_bench", "batch_size": "many"}]),
            ["body", "evals", 0, "eq_bench", "batch_size"],
            "'auto'",
        ),
        (sweep_body(evals=[{"kind": "bleu"}]), ["body", "evals", 0], "does not match any"),
        (sweep_body(space={**OVERLAP, "colour": 3}), ["body", "space", "overlap", "colour"], ""),
    ],
)
def test_bad_submissions_get_422_naming_the_field_and_store_nothing(
    client, database_url, body, loc, message
):
    response = client.post("/api/sweeps", json=body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert any(d["loc"][: len(loc)] == loc and message in d["msg"] for d in detail), detail
    assert count_rows(database_url) == (0, 0, 0)


def test_cap_on_plans_per_sweep(database_url):
    settings = Settings(database_url=database_url, max_plans_per_sweep=100)
    with TestClient(create_app(settings, dispatch=False)) as c:
        response = c.post("/api/sweeps", json=sweep_body(space={"kind": "rys"}))
        assert response.status_code == 422
        assert "would evaluate 466, over the cap of 100" in response.json()["detail"][0]["msg"]
        assert count_rows(database_url) == (0, 0, 0)
        # a strategy with a budget under the cap searches the same space
        body = sweep_body(space={"kind": "rys"}, strategy={"kind": "random", "budget": 40})
        response = c.post("/api/sweeps", json=body)
        assert response.status_code == 201, response.text
        assert response.json()["candidates"] == 41  # 40 drawn + the base model's reference
        assert "random evaluates at most 40 of 466" in response.json()["space"]["strategy"]


def test_cancel_and_unknown_ids(database_url):
    settings = Settings(database_url=database_url)
    with TestClient(create_app(settings, dispatch=False)) as c:
        sweep_id = c.post("/api/sweeps", json=sweep_body()).json()["id"]
        cancelled = c.post(f"/api/sweeps/{sweep_id}/cancel").json()
        assert cancelled["status"] == "cancelled"
        assert cancelled["counts"]["cancelled"] == 8
        assert c.get("/api/sweeps/999").status_code == 404
        assert c.get("/api/candidates/999/recipe.yaml").status_code == 404
        bad_metric = c.get(f"/api/sweeps/{sweep_id}/leaderboard", params={"metric": "bleu"})
        assert bad_metric.status_code == 422


def test_write_endpoints_need_the_token_when_set(database_url):
    settings = Settings(database_url=database_url, api_token="s3cret")
    with TestClient(create_app(settings, dispatch=False)) as c:
        assert c.post("/api/sweeps", json=sweep_body()).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert c.post("/api/sweeps", json=sweep_body(), headers=wrong).status_code == 401
        ok = c.post("/api/sweeps", json=sweep_body(), headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 201
        assert c.get("/api/sweeps").status_code == 200  # reads stay open
        assert c.delete(f"/api/sweeps/{ok.json()['id']}").status_code == 401
