"""The dashboard's server-rendered pages on a stored sweep (no worker: dispatch=False)."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from frankensweep.api.app import create_app
from frankensweep.core.config import Settings
from frankensweep.db import Candidate, Sweep
from frankensweep.db.store import upsert_result
from frankensweep.evals.registry import eval_key, parse_eval
from frankensweep.search import Plan
from frankensweep.sweeps.config import sweep_config

PPL = {"kind": "perplexity", "corpus": "pydoc_data.topics", "tokens": 256, "ctx": 128}
EQ = {"kind": "eq_bench", "questions": "q.json", "limit": 2, "max_gen_toks": 80}
OVERLAP = {"kind": "overlap", "slice_size": [8, 10, 2], "jump": [3, 5, 2], "last_slice": 8}
# (plan, params, status, perplexity, eqbench); None: no result stored
PLANS = [
    ("0-30", {}, "done", 10.0, 40.0),
    ("0-8,5-13,10-18,15-22,22-30", {"slice_size": 8, "jump": 3}, "done", 14.25, 30.0),
    ("0-8,3-11,6-14,9-17,12-20,15-22,22-30", {"slice_size": 8, "jump": 5}, "done", 19.0, 20.0),
    ("0-10,7-17,14-22,22-30", {"slice_size": 10, "jump": 3}, "done", 12.5, 35.0),
    ("0-10,5-15,10-20,15-22,22-30", {"slice_size": 10, "jump": 5}, "failed", None, None),
]


T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def new_sweep(**fields: Any) -> Sweep:
    """A grid sweep of a 30-layer model over OVERLAP, perplexity, EQ-Bench; ``fields`` override."""
    defaults: dict[str, Any] = dict(
        name="demo <sweep>",
        model="/models/SmolLM2.gguf",
        num_layers=30,
        space=OVERLAP | {"kept": 4},
        evals=[PPL, EQ],
        strategy={"kind": "grid"},
        started_at=T0,
    )
    return Sweep(**(defaults | fields))


def new_candidate(i: int, plan: str, params: dict, **fields: Any) -> Candidate:
    """The ``i``-th candidate of a sweep (the 0th: the reference), finished 30 s after the last."""
    defaults: dict[str, Any] = dict(
        ordinal=i,
        plan=plan,
        digest=Plan.parse(plan).digest,
        params=params,
        is_reference=i == 0,
        started_at=T0,
        finished_at=T0 + timedelta(seconds=30 * (i + 1)),
        attempts=1,
    )
    return Candidate(**(defaults | fields))


def store_result(session, sweep: Sweep, plan: str, spec, metrics: dict, details: dict) -> None:
    """A result of ``plan`` at the eval ``spec`` (its key), as the worker stores it."""
    upsert_result(
        session,
        model=sweep.model,
        plan=plan,
        plan_digest=Plan.parse(plan).digest,
        seconds=1.5,
        eval_key=eval_key(spec),
        eval_kind=spec.kind,
        metrics=metrics,
        details=details,
    )


def store_sweep(app: FastAPI, status: str = "done") -> tuple[int, list[int]]:
    """A sweep of 5 candidates with perplexity and EQ-Bench results, one candidate failed."""
    with app.state.sessions() as session:
        sweep = new_sweep(
            status=status, finished_at=T0 + timedelta(minutes=5) if status == "done" else None
        )
        for i, (plan, params, cstatus, ppl, eq) in enumerate(PLANS):
            error = "CUDA out of memory at position 17" if cstatus == "failed" else None
            sweep.candidates.append(new_candidate(i, plan, params, status=cstatus, error=error))
            if ppl is None:
                continue
            metrics = {"perplexity": ppl, "nll": 2.0}
            store_result(session, sweep, plan, parse_eval(PPL), metrics, {"windows": 2})
            items = [
                {
                    "question_id": "1",
                    "prompt": "How would Ann feel?",
                    "answer": "Surprised: 7\nAngry: 2\nSad: 1\nHappy: 0",
                    "emotions": {"Surprised": 7, "Angry": 2, "Sad": 1, "Happy": 0},
                    "score": 80.0,
                },
                {
                    "question_id": "2",
                    "prompt": "How would Bob feel?",
                    "answer": "<script>alert(1)</script> gibberish",
                    "emotions": None,
                    "score": 0.0,
                },
            ]
            metrics = {"eqbench": eq, "percent_parseable": 50.0}
            store_result(session, sweep, plan, parse_eval(EQ), metrics, {"items": items})
        session.add(sweep)
        session.commit()
        return sweep.id, [c.id for c in sweep.candidates]


HALVING = {"kind": "halving", "eta": 3, "rungs": 3, "budget": None, "seed": 0}
# levels of HALVING on [PPL, EQ]: perplexity on 28 tokens -> perplexity on 85 tokens -> full
PRUNED_1 = (
    "pruned after rung 2 of 3 (perplexity on 85 tokens): perplexity 16.5 ranked 2 of 2; "
    "the best 1 went on"
)
PRUNED_0 = (
    "pruned after rung 1 of 3 (perplexity on 28 tokens): perplexity {:.4g} ranked {} of 4; "
    "the best 2 went on"
)
# (plan, params, fidelity, status, pruned reason, perplexity per level reached)
HALVING_PLANS = [
    ("0-30", {}, 2, "done", None, [None, None, 10.0]),
    ("0-10,7-17,14-22,22-30", {"slice_size": 10, "jump": 3}, 2, "done", None, [20.0, 15.0, 12.5]),
    ("0-8,5-13,10-18,15-22,22-30", {"slice_size": 8, "jump": 3}, 1, "pruned", PRUNED_1,
     [21.0, 16.5]),
    ("0-8,3-11,6-14,9-17,12-20,15-22,22-30", {"slice_size": 8, "jump": 5}, 0, "pruned",
     PRUNED_0.format(31.25, 3), [31.25]),
    ("0-10,5-15,10-20,15-22,22-30", {"slice_size": 10, "jump": 5}, 0, "pruned",
     PRUNED_0.format(40.0, 4), [40.0]),
]  # fmt: skip


def store_halving_sweep(app: FastAPI) -> tuple[int, list[int]]:
    """A finished halving sweep: one plan reached full fidelity, three pruned below it.

    Results are stored at each level's eval key, as the worker stores them: the screening
    perplexity on 28 and 85 tokens, then the full evals (perplexity on 256 tokens, EQ-Bench).
    """
    with app.state.sessions() as session:
        sweep = new_sweep(
            name="halving demo",
            strategy=HALVING,
            status="done",
            round=2,
            search_finished=True,
            finished_at=T0 + timedelta(minutes=5),
        )
        levels = sweep_config(sweep).levels
        assert [lv.label for lv in levels] == [
            "perplexity on 28 tokens",
            "perplexity on 85 tokens",
            "full",
        ]
        for i, (plan, params, fidelity, cstatus, reason, ppls) in enumerate(HALVING_PLANS):
            sweep.candidates.append(
                new_candidate(
                    i,
                    plan,
                    params,
                    status=cstatus,
                    fidelity=fidelity,
                    round=fidelity,
                    pruned_reason=reason,
                )
            )
            for level, ppl in zip(levels, ppls, strict=False):
                if ppl is not None:  # the screening perplexity, or the full one
                    metrics = {"perplexity": ppl, "nll": 2.0}
                    store_result(session, sweep, plan, level.evals[0], metrics, {"windows": 1})
            if fidelity == 2:
                metrics = {"eqbench": 35.0, "percent_parseable": 100.0}
                store_result(session, sweep, plan, parse_eval(EQ), metrics, {})
        session.add(sweep)
        session.commit()
        return sweep.id, [c.id for c in sweep.candidates]


def leaderboard_row(html: str, candidate_id: int) -> str:
    """The HTML of one leaderboard row."""
    match = re.search(
        rf'<tr[^>]*\n\s*data-rank="[^"]*" data-id="{candidate_id}".*?</tr>', html, re.S
    )
    assert match, f"no row for candidate {candidate_id}"
    return match.group(0)


@pytest.fixture
def app(database_url):
    settings = Settings(database_url=database_url, broker_url=None, device="cpu")
    return create_app(settings, dispatch=False)


@pytest.fixture
def client(app):
    with TestClient(app) as c:
        yield c


def test_sweeps_list_empty_then_with_a_sweep(client, app):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "No sweeps yet" in page.text
    sweep_id, _ = store_sweep(app)
    page = client.get("/")
    assert f'href="/sweeps/{sweep_id}"' in page.text
    assert "demo &lt;sweep&gt;" in page.text  # escaped
    assert "SmolLM2.gguf" in page.text and "grid · overlap" in page.text
    assert "width: 100%" in page.text  # all 5 candidates finished
    assert "perplexity 12.500" in page.text  # best so far (reference excluded)
    assert "2025-01-01 12:00:00" in page.text
    fragment = client.get("/?fragment=1")
    assert fragment.status_code == 200 and "<html" not in fragment.text
    assert 'id="sweeps"' in fragment.text


def test_sweep_page_ranks_with_reference_row_charts_and_downloads(client, app):
    sweep_id, ids = store_sweep(app, status="running")
    page = client.get(f"/sweeps/{sweep_id}")
    assert page.status_code == 200
    html = page.text
    assert '<script src="/dashboard/static/plotly.min.js"></script>' in html
    assert 'id="cancel"' in html and 'id="cancel" data-sweep' in html
    assert (
        'data-running="true"' in html and f'data-fragment="/sweeps/{sweep_id}?fragment=1"' in html
    )
    # the reference row first, then ranks 1..3 by perplexity, the failed one unranked last
    order = re.findall(r'data-id="(\d+)"', html)
    assert order == [str(ids[0]), str(ids[3]), str(ids[1]), str(ids[2]), str(ids[4])]
    assert 'class="reference"' in html
    for metric in ("perplexity", "eqbench", "nll", "percent_parseable"):
        assert f"{metric} " in html
    assert html.count('<svg class="plan"') == 5
    assert 'class="rep"' in html  # overlapping plans repeat layers
    assert f'href="/api/candidates/{ids[3]}/recipe.yaml" download' in html
    assert html.count('<td class="reached">full</td>') == 5 and 'class="pruned"' not in html
    assert "round 1</span>" in html and 'id="strategy" data-kind="grid">grid<' in html
    assert f'href="/sweeps/{sweep_id}/leaderboard.csv" download' in html
    chart = json.loads(re.search(r'id="chart-data">(.*?)</script>', html, re.S).group(1))
    assert chart["metric"] == "perplexity" and chart["higher_is_better"] is False
    assert chart["higher"]["eqbench"] is True
    assert chart["reference"]["perplexity"] == 10.0
    assert chart["rows"][0]["params"] == {"slice_size": 10, "jump": 3}
    assert all(r["finished_at"] for r in chart["rows"])

    fragment = client.get(f"/sweeps/{sweep_id}?fragment=1")
    assert "<html" not in fragment.text and 'id="leaderboard"' in fragment.text

    done_page = client.get(f"/sweeps/{sweep_id}")  # still running: the cancel button shows
    assert "hidden>Cancel" not in done_page.text


def test_finished_sweep_hides_cancel_and_does_not_poll(client, app):
    sweep_id, _ = store_sweep(app, status="done")
    html = client.get(f"/sweeps/{sweep_id}").text
    assert 'data-running="false"' in html
    assert re.search(r'id="cancel"[^>]*hidden', html)


def test_leaderboard_downloads(client, app):
    sweep_id, ids = store_sweep(app)
    got = client.get(f"/sweeps/{sweep_id}/leaderboard.csv")
    assert got.status_code == 200 and got.headers["content-type"].startswith("text/csv")
    assert "attachment" in got.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(got.text)))
    assert [r["candidate_id"] for r in rows] == [
        str(i) for i in (ids[0], ids[3], ids[1], ids[2], ids[4])
    ]
    assert rows[0]["reference"] == "1" and rows[0]["rank"] == ""
    assert rows[1]["rank"] == "1" and float(rows[1]["perplexity"]) == 12.5
    assert rows[4]["status"] == "failed" and rows[4]["perplexity"] == ""
    assert {r["fidelity_label"] for r in rows} == {"full"}  # grid: one level
    assert {r["pruned_reason"] for r in rows} == {""}
    assert (
        client.get(f"/sweeps/{sweep_id}/leaderboard.csv?metric=eqbench")
        .text.splitlines()[2]
        .startswith(f"1,{ids[3]},")
    )
    got = client.get(f"/sweeps/{sweep_id}/leaderboard.json")
    assert "attachment" in got.headers["content-disposition"]
    assert got.json() == client.get(f"/api/sweeps/{sweep_id}/leaderboard").json()
    assert client.get("/sweeps/999/leaderboard.csv").status_code == 404


def test_candidate_page_shows_answers_and_failures(client, app):
    _, ids = store_sweep(app)
    html = client.get(f"/candidates/{ids[1]}").text
    assert "0-8,5-13,10-18,15-22,22-30" in html
    assert f'href="/api/candidates/{ids[1]}/recipe.yaml" download' in html
    assert 'id="eq-answers"' in html and "How would Ann feel?" in html
    assert "Surprised: 7" in html and "unparseable" in html
    assert "<script>alert(1)</script>" not in html  # raw answers are escaped
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "perplexity" in html and "14.250" in html
    failed = client.get(f"/candidates/{ids[4]}").text
    assert 'id="failure"' in failed and "CUDA out of memory at position 17" in failed
    assert "No stored results yet" in failed
    assert "(the base model)" in client.get(f"/candidates/{ids[0]}").text


def test_unknown_ids_get_an_html_404(client):
    for url, text in (
        ("/sweeps/424242", "sweep 424242 not found"),
        ("/candidates/9", "candidate 9"),
    ):
        page = client.get(url)
        assert page.status_code == 404 and "text/html" in page.headers["content-type"]
        assert text in page.text and 'id="not-found"' in page.text
    assert client.get("/api/sweeps/424242").json() == {"detail": "sweep 424242 not found"}


def test_new_sweep_form(client, app):
    html = client.get("/new").text
    for field in ("name", "model", "space-kind", "slice_size", "jump", "last_slice", "ppl-tokens"):
        assert f'id="{field}"' in html
    assert 'data-loc="space.slice_size"' in html and "FS.newPage()" in html
    store_sweep(app)
    assert 'value="/models/SmolLM2.gguf"' in client.get("/new").text  # the last sweep's model


def test_static_files_and_plotly_from_the_package(client):
    import plotly

    js = client.get("/dashboard/static/plotly.min.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert len(js.content) > 1_000_000 and plotly.__version__ and b"plotly" in js.content[:2000]
    assert "const FS" in client.get("/dashboard/static/dashboard.js").text
    assert client.get("/dashboard/static/dashboard.css").status_code == 200
    assert client.get("/dashboard/static/..%2Froutes.py").status_code == 404
    assert client.get("/dashboard/static/routes.py").status_code == 404


def test_pages_render_with_a_token_configured(database_url):
    settings = Settings(database_url=database_url, broker_url=None, api_token="s3cret")
    with TestClient(create_app(settings, dispatch=False)) as c:
        assert c.get("/").status_code == 200  # reads stay open
        assert 'id="api-token"' in c.get("/new").text
        assert c.post("/api/sweeps", json={}).status_code == 401


def test_halving_sweep_page_shows_strategy_levels_and_pruned_rows(client, app):
    sweep_id, ids = store_halving_sweep(app)
    html = client.get(f"/sweeps/{sweep_id}").text
    assert re.search(
        r'id="strategy" data-kind="halving">halving · eta 3 · rungs 3 · budget all · seed 0<', html
    )
    levels = re.search(r'<dd id="levels">(.*?)</dd>', html, re.S).group(1)
    assert re.findall(r'<span class="level">(.*?)</span>', levels) == [
        "perplexity on 28 tokens",
        "perplexity on 85 tokens",
        "full",
    ]
    assert re.search(r'id="sweep-round"[^>]*data-last="true">round 3 of 3 · last round<', html)
    counts = re.search(r'id="sweep-counts">(.*?)</span>', html, re.S).group(1)
    assert "done 2" in counts and "pruned 3" in counts
    # evaluations: the reference once, the winner at 3 levels, the pruned at 2, 1 and 1
    assert "8/8 evaluations finished (100%)" in html and "width: 100%" in html
    # full-fidelity rows ranked first, then the pruned ones, highest level, then best score first
    order = re.findall(r'data-id="(\d+)"', html)
    assert order == [str(i) for i in (ids[0], ids[1], ids[2], ids[3], ids[4])]
    assert '<th data-key="fidelity" data-type="num"' in html

    winner = leaderboard_row(html, ids[1])
    assert 'class="pruned"' not in winner and 'data-rank="1"' in winner
    assert re.search(r'<td class="reached">full</td>', winner)
    pruned = leaderboard_row(html, ids[2])
    assert pruned.startswith('<tr class="pruned"') and 'data-rank=""' in pruned
    assert 'data-fidelity="1"' in pruned
    assert f'<span class="status status-pruned" title="{PRUNED_1}">pruned</span>' in pruned
    assert f'<div class="reason" title="{PRUNED_1}">{PRUNED_1}</div>' in pruned
    assert re.search(
        r'<td class="reached">perplexity on 85 tokens<div class="partial small">'
        r"perplexity 16\.500</div></td>",
        pruned,
    )
    lowest = leaderboard_row(html, ids[4])
    assert "ranked 4 of 4" in lowest
    assert (
        '<td class="reached">perplexity on 28 tokens<div class="partial small">perplexity 40</div>'
        in lowest
    )
    # the pruned rows have no full-fidelity scores: the charts only see the winner
    chart = json.loads(re.search(r'id="chart-data">(.*?)</script>', html, re.S).group(1))
    scored = [r["id"] for r in chart["rows"] if r["scores"]]
    assert scored == [ids[1]]
    assert [r["fidelity_label"] for r in chart["rows"]][1:] == [
        "perplexity on 85 tokens",
        "perplexity on 28 tokens",
        "perplexity on 28 tokens",
    ]
    listing = client.get("/").text
    assert 'title="halving · eta 3 · rungs 3 · budget all · seed 0">halving · overlap' in listing


def test_halving_candidate_pages_show_reason_level_and_every_levels_results(client, app):
    _, ids = store_halving_sweep(app)
    html = client.get(f"/candidates/{ids[2]}").text
    assert f'<dd class="reason-full" id="pruned-reason">{PRUNED_1}</dd>' in html
    assert re.search(
        r'<dd id="fidelity" data-level="1">perplexity on 85 tokens <span class="small">'
        r"\(level 2 of 3\)</span></dd>",
        html,
    )
    assert '<dd id="round">2</dd>' in html and 'id="trial"' not in html
    assert 'class="status status-pruned" id="status">pruned<' in html
    # its results at both levels it reached, cheapest first, labelled with the level
    assert re.findall(r'<section class="result" data-kind="(\w+)" data-level="([^"]*)">', html) == [
        ("perplexity", "perplexity on 28 tokens"),
        ("perplexity", "perplexity on 85 tokens"),
    ]
    assert '<td class="num">21</td>' in html and '<td class="num">16.500</td>' in html
    # its partial score, named with the level (no full-fidelity score)
    assert re.search(
        r'<dt>perplexity <span class="small">\(perplexity on 85 tokens\)</span></dt>'
        r'<dd class="num partial">16\.500</dd>',
        html,
    )

    winner = client.get(f"/candidates/{ids[1]}").text
    assert 'id="pruned-reason"' not in winner
    assert '<dd id="fidelity" data-level="2">full <span' in winner
    assert re.findall(
        r'<section class="result" data-kind="(\w+)" data-level="([^"]*)">', winner
    ) == [
        ("perplexity", "perplexity on 28 tokens"),
        ("perplexity", "perplexity on 85 tokens"),
        ("eq_bench", "full"),
        ("perplexity", "full"),
    ]
    assert "num partial" not in winner


def test_halving_leaderboard_downloads_carry_level_and_reason(client, app):
    sweep_id, ids = store_halving_sweep(app)
    rows = list(csv.DictReader(io.StringIO(client.get(f"/sweeps/{sweep_id}/leaderboard.csv").text)))
    assert [r["candidate_id"] for r in rows] == [str(i) for i in ids]
    assert [r["fidelity_label"] for r in rows] == [
        "full",
        "full",
        "perplexity on 85 tokens",
        "perplexity on 28 tokens",
        "perplexity on 28 tokens",
    ]
    assert [r["pruned_reason"] for r in rows] == [
        "",
        "",
        PRUNED_1,
        PRUNED_0.format(31.25, 3),
        PRUNED_0.format(40.0, 4),
    ]
    assert [r["status"] for r in rows][2:] == ["pruned"] * 3
    assert float(rows[1]["perplexity"]) == 12.5 and rows[2]["perplexity"] == ""
    board = client.get(f"/sweeps/{sweep_id}/leaderboard.json").json()
    assert board == client.get(f"/api/sweeps/{sweep_id}/leaderboard").json()
    assert board["rows"][1]["pruned_reason"] == PRUNED_1
    assert board["rows"][1]["fidelity_label"] == "perplexity on 85 tokens"


def progress_text(client, sweep_id: int) -> tuple[str, int, str]:
    """The sweep page's progress line, bar width and round."""
    html = client.get(f"/sweeps/{sweep_id}?fragment=1").text
    text = re.search(r'id="sweep-progress"[^>]*>(.*?)</span>', html).group(1)
    width = int(re.search(r'class="bar wide"[^>]*><div style="width: (\d+)%"', html).group(1))
    return text, width, re.search(r'id="sweep-round"[^>]*>(.*?)</span>', html).group(1)


def test_progress_estimates_rounds_to_come_and_never_runs_back(client, app):
    """Halving sends promoted candidates back to pending, tpe adds candidates each round: the
    progress counts evaluations against an estimate of the whole search, so it only grows."""
    sweep_id, _ = store_halving_sweep(app)
    with app.state.sessions() as session:  # rewind to the end of round 1: all four screened
        sweep = session.get(Sweep, sweep_id)
        sweep.status, sweep.round, sweep.search_finished = "running", 0, False
        sweep.finished_at = None
        for c in sweep.candidates:
            if not c.is_reference:
                c.fidelity, c.status, c.pruned_reason = 0, "done", None
        session.commit()
    # 1 (reference) + 4 screened; to come: 2 at the second level, 1 at full
    assert progress_text(client, sweep_id) == (
        "5/~8 evaluations finished (62%)",
        62,
        "round 1 of 3",
    )
    with app.state.sessions() as session:  # round 2: two promoted (pending again), two pruned
        sweep = session.get(Sweep, sweep_id)
        sweep.round = 1
        for c in sweep.candidates[1:3]:
            c.fidelity, c.status = 1, "pending"
        for c in sweep.candidates[3:]:
            c.status, c.pruned_reason = "pruned", "pruned after rung 1"
        session.commit()
    assert progress_text(client, sweep_id) == (
        "5/~8 evaluations finished (62%)",
        62,
        "round 2 of 3",
    )

    tpe = {"kind": "tpe", "budget": 6, "batch": 2, "startup": None, "seed": 0}
    with app.state.sessions() as session:
        sweep = new_sweep(name="tpe demo", evals=[PPL], strategy=tpe, status="running")
        for i, (plan, params, *_rest) in enumerate(PLANS[:3]):
            trial = None if i == 0 else i - 1
            sweep.candidates.append(new_candidate(i, plan, params, status="done", trial=trial))
        session.add(sweep)
        session.commit()
        tpe_id = sweep.id
        trial_candidate = sweep.candidates[2].id
    assert progress_text(client, tpe_id) == ("3/~7 finished (42%)", 42, "round 1")
    with app.state.sessions() as session:  # round 2 adds two more candidates
        sweep = session.get(Sweep, tpe_id)
        sweep.round = 1
        for i, (plan, params, *_rest) in enumerate(PLANS[3:], 3):
            sweep.candidates.append(
                new_candidate(i, plan, params, round=1, trial=i - 1, finished_at=None)
            )
        session.commit()
    assert progress_text(client, tpe_id) == ("3/~7 finished (42%)", 42, "round 2")
    html = client.get(f"/sweeps/{tpe_id}").text
    assert "tpe · budget 6 · batch 2 · startup auto · seed 0" in html
    with app.state.sessions() as session:  # the space ran out: the search ended early
        sweep = session.get(Sweep, tpe_id)
        sweep.search_finished = True
        for c in sweep.candidates:
            c.status = "done"
        session.commit()
    assert progress_text(client, tpe_id) == ("5/5 finished (100%)", 100, "round 2 · last round")
    candidate = client.get(f"/candidates/{trial_candidate}").text
    assert '<dd id="trial">1</dd>' in candidate and '<dd id="round">1</dd>' in candidate
    assert '<dd id="fidelity" data-level="0">full</dd>' in candidate


def test_new_sweep_form_has_the_strategy_fields(client):
    html = client.get("/new").text
    kinds = re.findall(r'<option value="(\w+)"', html.split('id="strategy-kind"')[1])[:5]
    assert kinds == ["grid", "random", "halving", "tpe", "cmaes"]
    for name, default in (("eta", "3"), ("rungs", "3"), ("batch", "4"), ("seed", "0")):
        assert re.search(rf'id="strategy-{name}" type="number"[^>]*value="{default}"', html)
        assert f'data-loc="strategy.{name}"' in html
    assert 'id="strategy-budget"' in html and 'data-loc="strategy.budget"' in html
    assert '<span class="field-error" data-loc="strategy"></span>' in html
    assert re.search(r'class="strategy-field" data-kinds="halving"', html)
    assert "the best <code>1/eta</code> go on" in html


def test_halving_sweep_page_states_each_levels_size(client, app):
    """The ctx rule shown: a cheap level scores its few tokens in one shorter window."""
    sweep_id, _ = store_halving_sweep(app)
    html = client.get(f"/sweeps/{sweep_id}").text
    details = re.search(r'<dd id="level-details">(.*?) <span', html, re.S).group(1)
    assert details == (
        "perplexity on 28 tokens (1 window of 28) → perplexity on 85 tokens (1 window of 85) → "
        "perplexity on 256 tokens (2 windows of 128) + EQ-Bench on 2 questions"
    )
    sweep = client.get(f"/api/sweeps/{sweep_id}").json()
    assert sweep["level_details"] == details.split(" → ")
    assert sweep["progress"]["round_label"] == "round 3 of 3 · last round"


def test_a_stalled_sweep_names_its_silent_worker_on_the_page_and_in_the_list(client, app):
    """A worker holding two candidates, last heard from 40 s ago: the status line says so, the
    workers table shows it silent, the list marks the sweep stalled; the JSON agrees."""
    from frankensweep.db import Worker
    from frankensweep.db.models import utcnow
    from frankensweep.db.workers import Holding, beat

    sweep_id, ids = store_sweep(app)
    with app.state.sessions() as session:
        sweep = session.get(Sweep, sweep_id)
        sweep.status, sweep.finished_at = "running", None
        for c in sweep.candidates[3:]:
            c.status = "running"
        session.commit()
        beat(session, "gpu0@box", "box", 4242, Holding("celery:t1", sweep_id, tuple(ids[3:])))
        session.query(Worker).update({"last_seen": utcnow() - timedelta(seconds=40)})
        session.commit()
    sweep = client.get(f"/api/sweeps/{sweep_id}").json()
    assert [(w["name"], w["state"], w["candidates"]) for w in sweep["workers"]] == [
        ("gpu0@box", "silent", ids[3:])
    ]
    assert sweep["stall"].startswith(
        f"stalled: worker gpu0@box (pid 4242) holds candidates {ids[3]}, {ids[4]} and has not "
        "been heard from for 4"
    )
    html = client.get(f"/sweeps/{sweep_id}?fragment=1").text
    stall = re.search(r'<p class="stall" id="sweep-stall">(.*?)</p>', html, re.S).group(1)
    assert stall == sweep["stall"]
    row = re.search(r'<tr data-worker="gpu0@box" data-state="silent">(.*?)</tr>', html, re.S)
    assert row and f'href="/candidates/{ids[3]}"' in row.group(1) and "pid 4242" in row.group(1)
    listing = client.get("/").text
    assert re.search(rf'data-sweep="{sweep_id}".*?>stalled</span>', listing, re.S)


def test_a_promoted_candidates_page_shows_attempts_over_every_level(client, app):
    _, ids = store_halving_sweep(app)
    with app.state.sessions() as session:
        winner = session.get(Candidate, ids[1])
        winner.attempts, winner.level_attempts = 4, 1  # 3 levels; its worker died once at rung 2
        session.commit()
    html = client.get(f"/candidates/{ids[1]}").text
    assert re.search(r'<span id="attempts"[^>]*>attempts 4 \(1 at this level\)</span>', html)
    assert client.get(f"/api/candidates/{ids[1]}").json()["attempts"] == 4


HOSTILE = "<script>alert('x')</script>"  # a legal model name: no whitespace, comma, * or @


def test_plan_pictures_show_each_positions_model_and_scale_escaped(client, app):
    plans = [
        ("0-30", {}),
        (f"0-10,5-15@{HOSTILE},10-20,15-25@other*0.5,20-30", {"slice_size": 10}),
        ("0-20,10-20*0.75,20-30", {"i": 10, "j": 20}),
    ]
    with app.state.sessions() as session:
        sweep = new_sweep(
            status="done",
            space={"kind": "explicit", "plans": [p for p, _ in plans[1:]]},
            evals=[PPL],
            models={HOSTILE: "/models/a", "other": "/models/b"},
        )
        for i, (plan, params) in enumerate(plans):
            sweep.candidates.append(new_candidate(i, plan, params, status="done"))
        session.add(sweep)
        session.commit()
        sweep_id, ids = sweep.id, [c.id for c in sweep.candidates]
    for page in (client.get(f"/sweeps/{sweep_id}").text, client.get(f"/candidates/{ids[1]}").text):
        # the chart's JSON block holds the plan as JSON text; every piece of markup escapes it
        html = re.sub(r'id="chart-data">.*?</script>', "", page, flags=re.S)
        assert HOSTILE not in html and "<script>alert" not in html
        assert 'data-model="&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"' in html
        assert '<path class="once src1" d=' in html and '<path class="once src2 scaled"' in html
        assert (
            'data-model="other" data-scale="0.5"><title>positions 30-39: layers 15-24 of other, '
            in html
        )
        cuts = re.findall(r'<path class="cut" d="([^"]*)"', html)
        assert max(c.count("M") for c in cuts) == 4  # a tick at each of the 4 junctions
    sweep_page = client.get(f"/sweeps/{sweep_id}").text
    assert '<path class="rep scaled" d=' in sweep_page and 'data-scale="0.75"' in sweep_page
    assert "layers 10-19, scale 0.75 (repeated)" in sweep_page
    candidate_page = client.get(f"/candidates/{ids[1]}").text
    legend = re.search(r'<dl class="models" id="plan-models">(.*?)</dl>', candidate_page, re.S)
    assert legend and "/models/a" in legend.group(1) and "/models/b" in legend.group(1)
    assert "&lt;script&gt;" in legend.group(1) and 'class="swatch src2"' in legend.group(1)
    plain = client.get(f"/candidates/{ids[2]}").text
    assert 'id="plan-models"' in plain and "data-model" not in plain.split("<h2>Results")[0]
