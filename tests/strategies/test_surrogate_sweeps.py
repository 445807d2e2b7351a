"""The surrogate in the service: a tiny model, the embedded worker, SQLite and PostgreSQL.

A sweep asking for the layer prior waits for it in round 0 (its worker computes it with the
reference), then evaluates the plans the prior ranks best, then follows its model to its budget;
the sweep page draws the prior. A sweep whose worker dies in the middle of a round resumes after a
restart and ends exactly as an uninterrupted one does.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select

from frankensweep.api.app import create_app
from frankensweep.core.config import Settings
from frankensweep.db import Candidate, CandidateStatus, Sweep
from frankensweep.db.session import make_sessionmaker
from frankensweep.db.store import claim, pending_candidates
from frankensweep.evals.prior import PriorSpec
from frankensweep.search import RysSpace, enumerate_space
from frankensweep.sweeps.config import sweep_config
from frankensweep.sweeps.priors import stored_prior
from frankensweep.sweeps.rounds import advance
from frankensweep.testing.models import tiny_model_dir
from frankensweep.testing.sweeps import wait_sweep
from frankensweep.worker.loading import ModelCache
from frankensweep.worker.runner import plan_units, run_unit

LAYERS = 6
PRIOR = {"corpus": "pydoc_data.topics", "tokens": 128, "ctx": 64}
PPL = {"kind": "perplexity", "corpus": "pydoc_data.topics", "tokens": 192, "ctx": 64}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory.mktemp("surrogate") / "tiny", layers=LAYERS)


def settings(url: str, tiny) -> Settings:
    return Settings(
        database_url=url, device="cpu", dtype="float32", unit_size=2, path_roots=str(tiny.parent)
    )


def body(tiny, strategy: dict) -> dict:
    return {
        "name": "surrogate",
        "model": str(tiny),
        "space": {"kind": "rys"},
        "evals": [PPL],
        "strategy": strategy,
    }


def rounds(url: str, sweep_id: int) -> list[tuple[int, str, str]]:
    """(round, plan, status) of every candidate but the reference, in ordinal order."""
    engine = create_engine(url)
    with make_sessionmaker(engine)() as s:
        rows = s.scalars(
            select(Candidate)
            .where(Candidate.sweep_id == sweep_id, Candidate.is_reference.is_(False))
            .order_by(Candidate.ordinal)
        )
        found = [(c.round, c.plan, c.status) for c in rows]
    engine.dispose()
    return found


def test_a_sweep_with_the_prior_waits_for_it_then_follows_it(database_url, tiny):
    strategy = {"kind": "surrogate", "budget": 12, "batch": 2, "prior": PRIOR, "seed": 1}
    with TestClient(create_app(settings(database_url, tiny))) as client:
        created = client.post("/api/sweeps", json=body(tiny, strategy))
        assert created.status_code == 201, created.text
        sweep_id = created.json()["id"]
        done = wait_sweep(client, sweep_id, timeout=600)
        assert done["status"] == "done", done
        page = client.get(f"/sweeps/{sweep_id}").text
    found = rounds(database_url, sweep_id)
    assert [r for r, _, _ in found] == [1] * 8 + [2, 2] + [3, 3]  # round 0 was the reference's
    assert len({p for _, p, _ in found}) == 12 and {s for _, _, s in found} == {"done"}
    engine = create_engine(database_url)
    with make_sessionmaker(engine)() as s:
        sweep = s.get(Sweep, sweep_id)
        # kept under the sweep's load options (here dtype float32), as its scores are
        prior = stored_prior(s, str(tiny), LAYERS, PriorSpec(**PRIOR), sweep_config(sweep).load)
        assert sweep.round == 3
    engine.dispose()
    assert prior is not None and prior.num_layers == LAYERS
    # round 1 is the 8 plans the prior scores best, in its order
    points = [p for p in enumerate_space(RysSpace(LAYERS)).points if str(p.plan) != "0-6"]
    ranked = sorted(range(len(points)), key=lambda k: (prior.score(points[k].plan), k))
    assert [p for _, p, _ in found[:8]] == [str(points[k].plan) for k in ranked[:8]]
    # the sweep page draws it: a bar per layer, the best block shaded
    assert page.count('<svg class="prior"') == 1
    assert page.count('class="layer"') + page.count('class="clipped"') == LAYERS
    i, j = prior.best_block()
    assert f"best block to repeat: {i}-{j}" in page


def test_the_sweep_page_has_no_prior_without_one(tmp_path, tiny):
    url = f"sqlite:///{tmp_path / 'none.db'}"
    with TestClient(create_app(settings(url, tiny), dispatch=False)) as client:
        sweep_id = client.post("/api/sweeps", json=body(tiny, {"kind": "grid"})).json()["id"]
        assert '<svg class="prior"' not in client.get(f"/sweeps/{sweep_id}").text


def test_a_worker_dying_mid_round_then_a_restart_ends_as_an_uninterrupted_sweep(tmp_path, tiny):
    strategy = {"kind": "surrogate", "budget": 14, "batch": 3, "prior": PRIOR, "seed": 4}
    whole = f"sqlite:///{tmp_path / 'whole.db'}"
    with TestClient(create_app(settings(whole, tiny))) as client:
        sweep_id = client.post("/api/sweeps", json=body(tiny, strategy)).json()["id"]
        assert wait_sweep(client, sweep_id, timeout=600)["status"] == "done"
    expected = rounds(whole, sweep_id)
    assert len(expected) == 14

    broken = f"sqlite:///{tmp_path / 'broken.db'}"
    with TestClient(create_app(settings(broken, tiny), dispatch=False)) as client:
        broken_id = client.post("/api/sweeps", json=body(tiny, strategy)).json()["id"]
    engine = create_engine(broken)
    sessions = make_sessionmaker(engine)
    models = ModelCache()

    def run_units(count: int | None) -> None:
        with sessions() as s:
            units = plan_units(pending_candidates(s, broken_id), 2)
        for unit in units[:count]:
            run_unit(sessions, broken_id, unit, "worker", models, device="cpu", dtype="float32")

    run_units(None)  # round 0: the reference, and the prior
    assert advance(sessions, broken_id)  # round 1: the prior's 8 best
    run_units(1)  # two of them scored, then the worker dies holding two more
    with sessions() as s:
        left = [c.id for c in pending_candidates(s, broken_id)]
        assert len(left) == 6
        claim(s, left[:2], "a-worker-that-died")
        s.commit()
    assert advance(sessions, broken_id) is None  # the round is not over: nothing happens
    engine.dispose()
    with TestClient(create_app(settings(broken, tiny))) as client:  # the restart
        assert wait_sweep(client, broken_id, timeout=600)["status"] == "done"
    assert rounds(broken, broken_id) == expected
    assert [s for _, _, s in expected] == [CandidateStatus.done] * 14


def test_a_prior_that_cannot_be_computed_is_refused_at_submission(tmp_path, tiny):
    url = f"sqlite:///{tmp_path / 'refused.db'}"
    loc = ["body", "strategy", "prior"]
    cases = [
        ({"tokens": 32, "ctx": 64}, [*loc, "tokens"], "less than one window"),
        ({"corpus": str(tiny.parent / "nope.txt")}, [*loc, "corpus"], "not found"),
        ({"corpus": "/etc/hostname"}, [*loc, "corpus"], "not a file under the allowed"),
    ]
    with TestClient(create_app(settings(url, tiny), dispatch=False)) as client:
        for prior, where, message in cases:
            strategy = {"kind": "surrogate", "budget": 4, "prior": prior}
            response = client.post("/api/sweeps", json=body(tiny, strategy))
            assert response.status_code == 422, response.text
            detail = response.json()["detail"]
            assert any(d["loc"] == where and message in d["msg"] for d in detail), detail
        assert client.get("/api/sweeps").json() == []
