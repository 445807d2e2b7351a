"""Each strategy on real small sweeps: SmolLM2, the embedded service, SQLite and PostgreSQL.

Budgets are respected, rounds run in order, pruned candidates keep the fidelity they reached and
why, Optuna's study (in the sweep's own database) matches the stored scores, and rounds resume
after a crash between them or inside one.
"""

from __future__ import annotations

import math

import optuna
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from frankensweep.api.app import create_app
from frankensweep.core.config import Settings
from frankensweep.db import Candidate, CandidateStatus, Result, Sweep
from frankensweep.db.session import make_sessionmaker
from frankensweep.db.store import claim
from frankensweep.evals.registry import PerplexitySpec, eval_key, get_eval
from frankensweep.models import smollm2_path
from frankensweep.strategies import make_strategy
from frankensweep.strategies.model_based import study_name
from frankensweep.sweeps.rounds import advance, search_state
from frankensweep.testing.sweeps import wait_sweep as wait_done

SPACE = {"kind": "overlap", "slice_size": [6, 14, 2], "jump": [2, 5], "last_slice": [4, 8, 2]}
KEPT = 44  # plans of SPACE on SmolLM2's 30 layers (16 more are infeasible)
PPL = {"kind": "perplexity", "corpus": "pydoc_data.topics", "tokens": 256, "ctx": 128}


def body(strategy) -> dict:
    return {
        "name": "strategy",
        "model": str(smollm2_path()),
        "space": SPACE,
        "evals": [PPL],
        "strategy": strategy,
    }


def settings(url: str) -> Settings:
    return Settings(database_url=url, device="cpu", dtype="float32", unit_size=8)


def run(url: str, strategy) -> tuple[int, dict]:
    with TestClient(create_app(settings(url))) as client:
        created = client.post("/api/sweeps", json=body(strategy))
        assert created.status_code == 201, created.text
        sweep_id = created.json()["id"]
        sweep = wait_done(client, sweep_id)
        assert sweep["status"] == "done", sweep
        board = client.get(f"/api/sweeps/{sweep_id}/leaderboard").json()
    return sweep_id, board


def stored(url: str, sweep_id: int):
    engine = create_engine(url)
    with Session(engine) as s:
        sweep = s.get(Sweep, sweep_id)
        query = select(Candidate).where(Candidate.sweep_id == sweep_id).order_by(Candidate.id)
        candidates = list(s.scalars(query))
        results = list(s.scalars(select(Result)))
        s.expunge_all()
    engine.dispose()
    return sweep, candidates, results


def perplexity_key(tokens: int, ctx: int) -> str:
    """The key of a submitted perplexity eval: its settings and the digest of its corpus."""
    spec = PerplexitySpec(corpus="pydoc_data.topics", tokens=tokens, ctx=ctx)
    return eval_key(get_eval("perplexity").with_fingerprint(spec))


def test_random_evaluates_its_budget_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'random.db'}"
    sweep_id, board = run(url, {"kind": "random", "budget": 6, "seed": 3})
    sweep, candidates, results = stored(url, sweep_id)
    assert len(candidates) == 6 + 1 and sweep.round == 0 and sweep.search_finished
    assert all(c.status == CandidateStatus.done for c in candidates)
    assert len(results) == 7  # one perplexity per plan, base included
    assert [r["rank"] for r in board["rows"]] == list(range(1, 7))
    # the same seed draws the same plans again
    again, _ = run(url, {"kind": "random", "budget": 6, "seed": 3})
    assert {c.plan for c in stored(url, again)[1]} == {c.plan for c in candidates}
    assert len(stored(url, again)[2]) == 7  # all reused: nothing evaluated twice


def check_halving(url: str, sweep_id: int, kept: int, keys: list[str], eta: int = 3) -> list:
    """Rung by rung, exactly the best 1/eta went on; the rest pruned with why; no result twice."""
    sweep, candidates, results = stored(url, sweep_id)
    digests = {c.digest for c in candidates}
    results = [r for r in results if r.eval_key in keys and r.plan_digest in digests]
    plans = [c for c in candidates if not c.is_reference]
    rungs = len(keys)
    assert len(plans) == kept and sweep.round == rungs - 1 and sweep.status == "done"
    expected = [kept]
    for _ in range(rungs - 1):
        expected.append(math.ceil(expected[-1] / eta))
    at = [sum(1 for c in plans if c.fidelity >= r) for r in range(rungs)]
    assert at == expected
    by_key: dict[str, dict[str, float]] = {}
    for r in results:
        by_key.setdefault(r.eval_key, {})[r.plan_digest] = r.metrics["perplexity"]
    for rung in range(rungs - 1):  # who went on is exactly the best by that rung's perplexity
        there = [c for c in plans if c.fidelity >= rung]
        ranked = sorted(there, key=lambda c: (by_key[keys[rung]][c.digest], c.id))
        promoted = {c.id for c in there if c.fidelity > rung}
        assert promoted == {c.id for c in ranked[: math.ceil(len(there) / eta)]}
        for c in there:
            if c.fidelity == rung:
                assert c.status == CandidateStatus.pruned
                prefix = f"pruned after rung {rung + 1} of {rungs} (perplexity"
                assert c.pruned_reason.startswith(prefix)
    # one result per (plan, level reached) and the reference: none missing, none extra
    assert sorted((r.plan_digest, r.eval_key) for r in results) == sorted(
        [(c.digest, keys[level]) for c in plans for level in range(c.fidelity + 1)]
        + [(c.digest, keys[-1]) for c in candidates if c.is_reference]
    )
    return plans


def test_halving_prunes_rung_by_rung_and_records_why(database_url):
    sweep_id, board = run(database_url, {"kind": "halving", "eta": 3, "rungs": 3})
    keys = [perplexity_key(28, 28), perplexity_key(85, 85), perplexity_key(256, 128)]
    plans = check_halving(database_url, sweep_id, KEPT, keys)  # rungs of 44, 15 and 5 plans
    partial = {
        c.id: r.metrics["perplexity"]
        for c in plans
        for r in stored(database_url, sweep_id)[2]
        if r.plan_digest == c.digest and r.eval_key == keys[1]
    }
    # the leaderboard ranks the 5 finalists, then shows where the others stopped and why
    ranked_rows = [r for r in board["rows"] if r["rank"] is not None]
    assert len(ranked_rows) == 5 and all(r["fidelity_label"] == "full" for r in ranked_rows)
    rest = board["rows"][5:]
    assert [r["fidelity"] for r in rest] == [1] * 10 + [0] * 29
    assert all(r["status"] == "pruned" and r["pruned_reason"] and not r["scores"] for r in rest)
    assert rest[0]["fidelity_label"] == "perplexity on 85 tokens"
    assert rest[0]["partial_scores"]["perplexity"] == partial[rest[0]["candidate_id"]]
    assert [partial[r["candidate_id"]] for r in rest[:10]] == sorted(
        partial[r["candidate_id"]] for r in rest[:10]
    )


@pytest.mark.parametrize("kind", ["tpe", "cmaes"])
def test_model_based_asks_and_tells_through_a_study_in_the_same_database(tmp_path, kind):
    url = f"sqlite:///{tmp_path / f'{kind}.db'}"
    sweep_id, board = run(url, {"kind": kind, "budget": 8, "batch": 3, "seed": 1})
    sweep, candidates, results = stored(url, sweep_id)
    plans = [c for c in candidates if not c.is_reference]
    assert len(plans) == 8 and sweep.round == 2  # rounds of 3, 3 and 2
    assert [sum(1 for c in plans if c.round == r) for r in range(3)] == [3, 3, 2]
    assert len({c.plan for c in plans}) == 8 and len(results) == 9
    study = optuna.load_study(study_name=study_name(sweep_id), storage=url)
    complete = {t.number: t for t in study.trials if t.state.name == "COMPLETE"}
    assert not [t for t in study.trials if t.state.name == "RUNNING"]
    ppl = {r.plan_digest: r.metrics["perplexity"] for r in results}
    assert {c.trial for c in plans} == set(complete)
    for c in plans:  # each trial was told its plan's stored perplexity, with its parameters
        assert complete[c.trial].value == ppl[c.digest]
        params = complete[c.trial].params
        assert {k: c.params[k] for k in params} == params
    assert len(board["rows"]) == 8


def test_deleting_a_sweep_deletes_its_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'delete.db'}"
    with TestClient(create_app(settings(url), dispatch=False)) as client:
        strategy = {"kind": "tpe", "budget": 4, "batch": 2}
        sweep_id = client.post("/api/sweeps", json=body(strategy)).json()["id"]
        assert study_name(sweep_id) in optuna.get_all_study_names(url)  # asked for round 0
        assert client.delete(f"/api/sweeps/{sweep_id}").status_code == 204
        assert study_name(sweep_id) not in optuna.get_all_study_names(url)
        grid = client.post("/api/sweeps", json=body("grid")).json()["id"]
        assert client.delete(f"/api/sweeps/{grid}").status_code == 204  # no study: fine


def test_strategy_errors_are_422_and_store_nothing(tmp_path):
    url = f"sqlite:///{tmp_path / 'bad.db'}"
    with TestClient(create_app(settings(url), dispatch=False)) as client:
        cases = [
            ({"kind": "tpe"}, "budget"),
            ({"kind": "halving", "rungs": 4}, "rung 1 of 4 would score 9 tokens"),
            ({"kind": "cmaes", "budget": 3}, None),
            ({"kind": "annealing"}, "annealing"),
        ]
        explicit = {"kind": "explicit", "plans": ["0-20,10-30", "0-16,8-30"]}
        for strategy, message in cases:
            payload = body(strategy)
            if message is None:  # cmaes needs ordered parameters: not a list of plans
                payload["space"], message = explicit, "cmaes needs ordered parameters"
            response = client.post("/api/sweeps", json=payload)
            assert response.status_code == 422, response.text
            detail = response.json()["detail"]
            found = [d for d in detail if "strategy" in d["loc"]]
            assert any(message in d["msg"] or message in d["loc"] for d in found), detail
        assert client.get("/api/sweeps").json() == []


def test_rounds_resume_after_crashes_between_and_inside_them(tmp_path):
    """A worker dies inside round 1; an advance dies after asking Optuna, before storing."""
    url = f"sqlite:///{tmp_path / 'resume.db'}"
    strategy = {"kind": "tpe", "budget": 6, "batch": 3, "seed": 2}
    with TestClient(create_app(settings(url), dispatch=False)) as client:
        sweep_id = client.post("/api/sweeps", json=body(strategy)).json()["id"]
    sessions = make_sessionmaker(create_engine(url))
    with sessions() as s:
        ids = [c.id for c in s.scalars(select(Candidate).where(Candidate.sweep_id == sweep_id))]
        claim(s, ids[:2], "a-worker-that-died")  # round 0 taken by a process that then died
        assert advance(sessions, sweep_id) is None  # round 0 is not over: nothing happens
        sweep = s.get(Sweep, sweep_id)
        # a crash after Optuna was asked for round 1 but before the round was stored
        make_strategy(sweep.strategy).propose(search_state(s, sweep, 1))
        s.rollback()
    study = optuna.load_study(study_name=study_name(sweep_id), storage=url)
    assert sum(t.state.name == "RUNNING" for t in study.trials) == 3 + 3  # round 0 + orphans
    # restart: the embedded worker releases the dead claims and runs every round to the end
    with TestClient(create_app(settings(url))) as client:
        assert wait_done(client, sweep_id)["status"] == "done"
    sweep, candidates, results = stored(url, sweep_id)
    plans = [c for c in candidates if not c.is_reference]
    assert len(plans) == 6 and sweep.round == 1
    assert all(c.status == CandidateStatus.done for c in candidates)
    assert len(results) == 7 and len({(r.plan_digest, r.eval_key) for r in results}) == 7
    study = optuna.load_study(study_name=study_name(sweep_id), storage=url)
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == 6 and "RUNNING" not in states
    assert states.count("FAIL") >= 3  # the orphans of the crashed advance
