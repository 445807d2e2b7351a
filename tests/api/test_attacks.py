"""The service attacked from outside, as a careless user and as an attacker would (issue 14).

Each test is one attack that got through before: a 500, a write it should have refused, a stale
score, a race, a limit missing. Each checks the answer and that nothing was stored or changed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select
from test_limits import body, client_for, populate
from test_sweeps_api import count_rows

from frankensweep.api.app import create_app
from frankensweep.core.config import Settings
from frankensweep.core.net import free_port
from frankensweep.db import Result, Sweep
from frankensweep.testing.models import tiny_model_dir
from frankensweep.testing.processes import Processes, embedded_env, wait_for_health
from frankensweep.testing.sweeps import wait_sweep

PPL = {"kind": "perplexity", "corpus": "pydoc_data.topics", "tokens": 256, "ctx": 128}


@pytest.fixture
def root(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return populate(tmp_path / "root")


def raw_post(client: TestClient, path: str, text: str, **headers: str):
    return client.post(path, content=text, headers={"content-type": "application/json", **headers})


# -- 2. an empty token is no token --------------------------------------------------------------


def test_an_empty_or_blank_token_is_no_token():
    for value in ("", "   "):
        assert Settings(api_token=value).api_token is None
    assert Settings(api_token="t0k").api_token is not None


def test_serve_refuses_a_public_address_with_an_empty_token(tmp_path):
    env = {**os.environ, "FRANKENSWEEP_API_TOKEN": "", "FRANKENSWEEP_DATABASE_URL": "sqlite://"}
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "frankensweep"), "serve", "--host", "0.0.0.0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "refusing to bind 0.0.0.0 without FRANKENSWEEP_API_TOKEN" in proc.stderr


def test_a_bare_bearer_never_matches_a_token(database_url, root):
    with client_for(database_url, root, api_token="t0k") as c:
        for header in ("Bearer", "Bearer ", "Bearer  ", "bearer"):
            answer = c.post("/api/sweeps", json=body(root), headers={"Authorization": header})
            assert answer.status_code == 401, (header, answer.text)
    assert count_rows(database_url) == (0, 0, 0)


# -- 6. cross-site writes and DNS rebinding ------------------------------------------------------


def stored_sweep(c: TestClient, root: Path) -> int:
    created = c.post("/api/sweeps", json=body(root))
    assert created.status_code == 201, created.text
    return created.json()["id"]


def test_a_cross_origin_write_is_refused_and_changes_nothing(database_url, root):
    with client_for(database_url, root) as c:
        sweep_id = stored_sweep(c, root)
        cancel = f"/api/sweeps/{sweep_id}/cancel"
        # a form on another site (no body needed), a fetch from another origin, a browser's
        # cross-site mark without an Origin, a DELETE from elsewhere
        form = c.post(
            cancel,
            content=b"",
            headers={
                "Origin": "http://evil.example",
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        fetch = c.post(cancel, headers={"Origin": "http://127.0.0.1:9"})
        marked = c.post(cancel, headers={"Sec-Fetch-Site": "cross-site"})
        delete = c.delete(f"/api/sweeps/{sweep_id}", headers={"Origin": "null"})
        submit = c.post("/api/sweeps", json=body(root), headers={"Origin": "http://evil.example"})
        for answer in (form, fetch, marked, delete, submit):
            assert answer.status_code == 403, answer.text
            assert "cross-origin write refused" in answer.json()["detail"]
        assert c.get(f"/api/sweeps/{sweep_id}").json()["status"] == "queued"
        # the API's own origin (the dashboard's fetches) and non-browser clients pass
        own = c.post(cancel, headers={"Origin": "http://testserver"})
        assert own.status_code == 200 and own.json()["status"] == "cancelled"
    assert count_rows(database_url)[0] == 1


def test_listed_origins_may_write(database_url, root):
    with client_for(database_url, root, allowed_origins="https://lab.example:8443/") as c:
        sweep_id = stored_sweep(c, root)
        answer = c.post(
            f"/api/sweeps/{sweep_id}/cancel", headers={"Origin": "https://lab.example:8443"}
        )
        assert answer.status_code == 200, answer.text


def test_a_dns_rebound_host_is_refused_for_reads_and_writes(database_url, root):
    settings = Settings(database_url=database_url, path_roots=str(root), trusted_hosts="")
    assert settings.host_allowlist() == ["127.0.0.1", "localhost", "::1"]
    with TestClient(create_app(settings, dispatch=False), base_url="http://127.0.0.1") as c:
        sweep_id = stored_sweep(c, root)
        evil = {"Host": "evil.example:8000", "Origin": "http://evil.example:8000"}
        for answer in (
            c.get("/api/sweeps", headers=evil),
            c.get("/", headers=evil),
            c.post(f"/api/sweeps/{sweep_id}/cancel", headers=evil),
        ):
            assert answer.status_code == 400, answer.text
            assert "is not trusted" in answer.json()["detail"]
        assert c.get(f"/api/sweeps/{sweep_id}").json()["status"] == "queued"
        for host in ("localhost:8000", "127.0.0.1", "[::1]:8000"):
            assert c.get("/healthz", headers={"Host": host}).status_code == 200, host
    # with a token any host may read (a rebound page has no token to write with)
    assert Settings(api_token="t0k", trusted_hosts="").host_allowlist() is None
    assert Settings(trusted_hosts="frankensweep.lab, *").host_allowlist() is None


# -- 7. 500s on odd input, and late failures of what is known bad at submission ------------------


@pytest.mark.parametrize(
    "text",
    [
        '"evals": [{"kind": "perplexity", "tokens": Infinity}]',
        '"evals": [{"kind": "perplexity"}], "x": -Infinity',
        '"evals": [{"kind": "preference", "prompts": '
        '[{"prompt": "a", "wanted": ["b"], "unwanted": ["c"], "w": NaN}]}]',
    ],
)
def test_nan_and_infinity_in_a_body_are_422_and_store_nothing(database_url, root, text):
    model = json.dumps(str(root / "tiny"))
    raw = f'{{"name": "t", "model": {model}, "space": {{"kind": "rys"}}, {text}}}'
    with client_for(database_url, root) as c:
        answer = raw_post(c, "/api/sweeps", raw)
    assert answer.status_code == 422, answer.text
    assert "is not valid JSON: use null or a finite number" in answer.text
    assert count_rows(database_url) == (0, 0, 0)


@pytest.mark.parametrize("field", ["model", "corpus", "questions", "prompts"])
def test_a_name_longer_than_a_file_system_takes_is_422(database_url, root, field):
    long = str(root / ("a" * 300)) + (".json" if field == "questions" else "")
    overrides = {
        "model": {"model": long},
        "corpus": {"evals": [{**PPL, "corpus": long}]},
        "questions": {"evals": [{"kind": "eq_bench", "questions": long}]},
        "prompts": {"evals": [{"kind": "preference", "prompts": long}]},
    }[field]
    with client_for(database_url, root) as c:
        answer = c.post("/api/sweeps", json=body(root, **overrides))
    assert answer.status_code == 422, answer.text
    assert "name too long" in answer.json()["detail"][0]["msg"]
    assert count_rows(database_url) == (0, 0, 0)


def test_an_unknown_metric_on_the_downloads_is_422(database_url, root):
    with client_for(database_url, root) as c:
        sweep_id = stored_sweep(c, root)
        for path in ("leaderboard.csv", "leaderboard.json"):
            answer = c.get(f"/sweeps/{sweep_id}/{path}", params={"metric": "nope"})
            assert answer.status_code == 422, answer.text
            assert answer.json()["detail"][0]["loc"] == ["query", "metric"]


def test_what_is_known_bad_at_submission_is_refused_then(database_url, root, monkeypatch):
    monkeypatch.chdir(root)  # relative names resolve under the root: past the path check
    recipe = "merge_method: passthrough\nslices:\n" + "".join(
        f"  - sources: [{{model: other/model, layer_range: [{a}, {b}]}}]\n"
        for a, b in ((0, 6), (2, 8))
    )
    cases = {
        "tokens below ctx": ({"evals": [{**PPL, "tokens": 100, "ctx": 128}]}, "tokens"),
        "ctx beyond the model": ({"evals": [{**PPL, "tokens": 1024, "ctx": 512}]}, "ctx"),
        "questions like a hub id": (
            {"evals": [{"kind": "eq_bench", "questions": "org/name.json"}]},
            "EQ-Bench question file not found",
        ),
        "recipe of another model": (
            {"space": {"kind": "explicit", "recipes": [recipe]}},
            "the recipe is written for model other/model",
        ),
        "slices of an undeclared model": (
            {"space": {"kind": "explicit", "plans": ["0-4@other,4-8"]}},
            "which the sweep does not declare",
        ),
    }
    with client_for(database_url, root) as c:
        for name, (overrides, words) in cases.items():
            answer = c.post("/api/sweeps", json=body(root, **overrides))
            assert answer.status_code == 422, (name, answer.text)
            assert words in json.dumps(answer.json()), (name, answer.text)
    assert count_rows(database_url) == (0, 0, 0)


# -- 3. runaway work: plan length, page sizes -----------------------------------------------------


def test_a_plan_over_the_positions_cap_is_refused(database_url, root):
    huge = ",".join(["0-8"] * 375_000)  # 3,000,000 positions in under 2 MiB
    with client_for(database_url, root) as c:
        answer = c.post(
            "/api/sweeps", json=body(root, space={"kind": "explicit", "plans": ["0-8", huge]})
        )
        assert answer.status_code == 422, answer.text[:300]
        (detail,) = answer.json()["detail"]
        assert detail["loc"] == ["body", "space", "plans", 1]
        assert "has 3000000 positions, over the cap of 1024" in detail["msg"]
        generated = c.post(
            "/api/sweeps", json=body(root, space={"kind": "rys"}), params={}
        )  # RYS plans of 8 layers: at most 16 positions, under the cap
        assert generated.status_code == 201, generated.text
    with client_for(database_url, root, max_plan_positions=12) as c:
        answer = c.post("/api/sweeps", json=body(root, space={"kind": "rys"}))
        assert answer.status_code == 422 and "over the cap of 12" in answer.text
    assert count_rows(database_url)[0] == 1


def test_the_sweep_list_is_paged_and_leaves_explicit_plans_out(database_url, root):
    plans = [f"0-{n},{n - 2}-8" for n in range(3, 8)]
    with client_for(database_url, root) as c:
        ids = [stored_sweep_with(c, root, {"kind": "explicit", "plans": plans}) for _ in range(3)]
        page = c.get("/api/sweeps", params={"limit": 2})
        assert page.headers["x-total-count"] == "3"
        assert [s["id"] for s in page.json()] == ids[::-1][:2]
        assert [s["id"] for s in c.get("/api/sweeps?limit=2&offset=2").json()] == [ids[0]]
        listed = page.json()[0]["space"]
        assert "plans" not in listed and listed["plan_count"] == 5
        assert len(c.get(f"/api/sweeps/{ids[0]}").json()["space"]["plans"]) == 5
        assert c.get("/api/sweeps?limit=501").status_code == 422


def stored_sweep_with(c: TestClient, root: Path, space: dict) -> int:
    created = c.post("/api/sweeps", json=body(root, space=space))
    assert created.status_code == 201, created.text
    return created.json()["id"]


# -- 5. races: the active-sweeps cap, ids reused ------------------------------------------------


def test_a_burst_of_submissions_never_passes_the_active_cap(database_url, root):
    cap = 4
    settings = Settings(database_url=database_url, path_roots=str(root), max_active_sweeps=cap)
    answers: list[int] = []
    with TestClient(create_app(settings, dispatch=False)) as c:

        def submit() -> None:
            answers.append(c.post("/api/sweeps", json=body(root)).status_code)

        threads = [threading.Thread(target=submit) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(answers) == [201] * cap + [429] * (12 - cap)
    assert count_rows(database_url)[0] == cap


def test_a_deleted_sweeps_id_is_never_given_out_again(database_url, root):
    with client_for(database_url, root) as c:
        first = stored_sweep(c, root)
        candidates = [
            r["candidate_id"] for r in c.get(f"/api/sweeps/{first}/leaderboard").json()["rows"]
        ]
        assert c.delete(f"/api/sweeps/{first}").status_code == 204
        second = stored_sweep(c, root)
        again = [
            r["candidate_id"] for r in c.get(f"/api/sweeps/{second}/leaderboard").json()["rows"]
        ]
    assert second > first
    assert not set(again) & set(candidates)


# -- 4. stale scores: results keyed by what the files hold --------------------------------------


@pytest.mark.slow
def test_a_rewritten_corpus_or_model_never_reuses_old_scores(tmp_path):
    """Submit, rewrite the corpus, submit the same sweep: new scores, old ones kept apart.
    Then rewrite the model's weights: new scores again."""
    model = tiny_model_dir(tmp_path / "tiny", layers=4, vocab_size=512)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 60)
    url = f"sqlite:///{tmp_path / 'fs.db'}"
    settings = Settings(
        database_url=url, path_roots=str(tmp_path), device="cpu", dtype="float32", unit_size=8
    )
    sweep = {
        "name": "stale",
        "model": str(model),
        "space": {"kind": "explicit", "plans": ["0-3,1-4"]},
        "evals": [{"kind": "perplexity", "corpus": str(corpus), "tokens": 256, "ctx": 64}],
    }

    def run() -> list[float]:
        created = client.post("/api/sweeps", json=sweep)
        assert created.status_code == 201, created.text
        done = wait_sweep(client, created.json()["id"], timeout=300)
        assert done["status"] == "done", done
        board = client.get(f"/api/sweeps/{done['id']}/leaderboard").json()
        return [
            board["reference"]["scores"]["perplexity"],
            board["rows"][0]["scores"]["perplexity"],
        ]

    with TestClient(create_app(settings)) as client:
        first = run()
        again = run()  # same files: the stored scores are reused
        corpus.write_text("zz yy xx ww " * 200)
        rewritten = run()
        import torch
        from safetensors.torch import load_file, save_file

        weights = model / "model.safetensors"
        state = load_file(weights)
        save_file({k: v + 0.01 * torch.ones_like(v) for k, v in state.items()}, weights)
        retrained = run()
    assert again == first
    assert rewritten != first and retrained != rewritten
    engine = create_engine(url)
    with engine.connect() as conn:
        keys = {(r.model, r.eval_key) for r in conn.execute(select(Result.model, Result.eval_key))}
        sweeps = list(conn.execute(select(Sweep.model_key)))
    engine.dispose()
    assert len(keys) == 3  # (old model, old corpus), (old model, new corpus), (new model, ...)
    assert len({s.model_key for s in sweeps}) == 2


# -- 8. slow clients ----------------------------------------------------------------------------


@pytest.mark.slow
def test_a_client_trickling_its_body_gets_408(tmp_path):
    port = free_port()
    env = embedded_env(f"sqlite:///{tmp_path / 'fs.db'}", FRANKENSWEEP_READ_TIMEOUT="2")
    procs = Processes(tmp_path, env)
    try:
        procs.start("api", "serve", "--port", str(port))
        wait_for_health(f"http://127.0.0.1:{port}", procs)
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            sock.sendall(
                b"POST /api/sweeps HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
            )
            start = time.monotonic()
            answer = b""
            try:
                for _ in range(15):  # one byte a second: never done within the timeout
                    sock.sendall(b" ")
                    time.sleep(1)
            except OSError:  # the server answered and closed
                pass
            answer = sock.recv(4096)
            waited = time.monotonic() - start
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert b"did not arrive within 2 s" in answer
        assert waited < 10
    finally:
        procs.stop_all()


def test_the_sweep_page_shows_a_page_of_rows(database_url, root):
    from frankensweep.db import make_engine, make_sessionmaker
    from frankensweep.search import Plan, RysSpace, enumerate_space
    from frankensweep.testing.sweeps import seed_sweep

    points = [p for p in enumerate_space(RysSpace(num_layers=30)).points if p.plan != Plan.base(30)]
    plans = [(Plan.base(30), {})] + [(p.plan, p.params) for p in points[:249]]
    engine = make_engine(database_url)
    with make_sessionmaker(engine)() as s:
        sweep = seed_sweep(
            s,
            plans,
            name="wide",
            model="/models/m",
            num_layers=30,
            space={"kind": "rys"},
            evals=[PPL],
            strategy={"kind": "grid"},
        )
        s.commit()
        sweep_id = sweep.id
    engine.dispose()
    with client_for(database_url, root) as c:
        first = c.get(f"/sweeps/{sweep_id}").text
        last = c.get(f"/sweeps/{sweep_id}", params={"page": 3}).text
        beyond = c.get(f"/sweeps/{sweep_id}", params={"page": 99}).text
    assert first.count('<svg class="plan"') == 101  # the reference and 100 rows
    assert "rows 1–100 of 249" in first and 'href="?page=2"' in first
    assert last.count('<svg class="plan"') == 50 and "rows 201–249 of 249" in last
    assert "page 3 of 3" in beyond  # past the end: the last page
