"""Cancelling stops the work itself: a long plan stops within seconds of the cancel answer and
stores nothing after it; a sweep cancelled at once stays cancelled (issue 14, items 3 and 5)."""

from __future__ import annotations

import math
import threading
import time

import pytest
import torch
from fastapi.testclient import TestClient
from sqlalchemy import select

from frankensweep.api.app import create_app
from frankensweep.core.config import Settings
from frankensweep.db import Candidate, Result, make_engine, make_sessionmaker, upgrade
from frankensweep.db.models import utcnow
from frankensweep.models import smollm2_path
from frankensweep.sweeps.request import SweepCreate
from frankensweep.sweeps.submission import build_sweep, store_sweep
from frankensweep.testing.models import tiny_model_dir
from frankensweep.testing.sweeps import wait_sweep
from frankensweep.worker.loading import ModelCache
from frankensweep.worker.runner import run_unit

pytestmark = pytest.mark.slow

REPEATS = 35  # the plan 0-30 x 35: 1,050 positions, under the cap with the base model's 30


def seconds_per_layer_token(smollm2) -> float:
    """Median cost of one decoder layer on one token, from the base model on 256 tokens."""
    ids = torch.randint(0, 1000, (1, 256))
    times = []
    with torch.inference_mode():
        for _ in range(3):
            start = time.perf_counter()
            smollm2.model(input_ids=ids, use_cache=False)
            times.append(time.perf_counter() - start)
    return sorted(times)[1] / (smollm2.num_layers * 256)


def test_a_cancelled_unit_stops_within_seconds_and_stores_nothing_after(smollm2, tmp_path):
    plan = ",".join(["0-30"] * REPEATS)
    ctx = 256
    per_token = seconds_per_layer_token(smollm2) * 30 * REPEATS
    windows = max(4, math.ceil(60 / (per_token * ctx)))  # the plan alone: a minute or more
    expected = per_token * ctx * windows
    assert expected >= 60
    url = f"sqlite:///{tmp_path / 'fs.db'}"
    upgrade(url)
    settings = Settings(
        database_url=url,
        path_roots=str(smollm2_path().parent),
        max_plan_positions=2048,
        device="cpu",
        dtype="float32",
    )
    body = {
        "name": "long",
        "model": str(smollm2_path()),
        "space": {"kind": "explicit", "plans": [plan]},
        "evals": [{"kind": "perplexity", "tokens": ctx * windows, "ctx": ctx}],
    }
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    submission = build_sweep(SweepCreate.model_validate(body), settings)
    with sessions() as s:
        store_sweep(s, submission)
        ids = list(s.scalars(select(Candidate.id).order_by(Candidate.id)))
    models = ModelCache()
    models.put(smollm2, "cpu", "float32")
    reports = []
    worker = threading.Thread(
        target=lambda: reports.append(
            run_unit(sessions, submission.sweep.id, ids, "unit", models, "cpu", "float32")
        )
    )
    worker.start()
    time.sleep(5)  # well inside the plan's minute of layers
    assert worker.is_alive()
    with TestClient(create_app(settings, dispatch=False)) as client:
        answer = client.post(f"/api/sweeps/{submission.sweep.id}/cancel")
        answered = utcnow()
    assert answer.status_code == 200 and answer.json()["status"] == "cancelled"
    start = time.monotonic()
    worker.join(10)
    stopped_after = time.monotonic() - start
    assert not worker.is_alive(), "the unit was still computing 10 s after the cancel"
    (report,) = reports
    assert report.stopped and report.evaluated == 0
    with sessions() as s:
        late = s.scalars(select(Result).where(Result.created_at >= answered)).all()
        statuses = set(s.scalars(select(Candidate.status)))
    engine.dispose()
    assert late == [] and statuses == {"cancelled"}
    print(f"plan expected {expected:.0f} s; stopped {stopped_after:.2f} s after the cancel answer")


def test_a_sweep_cancelled_right_after_submission_stays_cancelled(tmp_path):
    """The worker starts at once and writes statuses meanwhile: none of its writes may turn the
    cancel back (a status read before the cancel, written after it)."""
    model = tiny_model_dir(tmp_path / "tiny", layers=4, vocab_size=512)
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'fs.db'}",
        path_roots=str(tmp_path),
        device="cpu",
        dtype="float32",
        unit_size=1,
    )
    body = {
        "name": "quick",
        "model": str(model),
        "space": {"kind": "rys"},
        "evals": [{"kind": "perplexity", "tokens": 128, "ctx": 64}],
    }
    with TestClient(create_app(settings)) as client:
        for _ in range(8):
            created = client.post("/api/sweeps", json=body).json()
            cancelled = client.post(f"/api/sweeps/{created['id']}/cancel").json()
            assert cancelled["status"] == "cancelled"
            ends = wait_sweep(client, created["id"])
            time.sleep(0.5)  # the worker's last writes for this sweep
            final = client.get(f"/api/sweeps/{created['id']}").json()
            assert ends["status"] == final["status"] == "cancelled", final
            assert final["counts"]["pending"] == final["counts"]["running"] == 0


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_a_status_read_before_a_cancel_is_never_written_after_it(database_url):
    """A worker's session reads the sweep and its candidates, a cancel commits, then the worker
    ends its unit: the sweep and its candidates stay cancelled (status changes are conditional
    updates, never a write of what was read before)."""
    from frankensweep.db import Sweep
    from frankensweep.search import Plan
    from frankensweep.sweeps.status import cancel_sweep, finish_claimed, refresh_sweep
    from frankensweep.testing.sweeps import seed_sweep

    engine = make_engine(database_url)
    sessions = make_sessionmaker(engine)
    plans = [(Plan.base(8), {}), (Plan.parse("0-6,2-8"), {})]
    with sessions() as s:
        sweep = seed_sweep(
            s,
            plans,
            lambda i, plan: {"status": "running", "claimed_by": "unit", "attempts": 1},
            name="race",
            model="m",
            num_layers=8,
            space={"kind": "rys"},
            evals=[{"kind": "perplexity"}],
            strategy={"kind": "grid"},
            status="running",
            search_finished=True,
        )
        s.commit()
        sweep_id = sweep.id
    with sessions() as worker, sessions() as api:
        seen = worker.get(Sweep, sweep_id)
        held = list(worker.scalars(select(Candidate).where(Candidate.sweep_id == sweep_id)))
        assert seen.status == "running" and {c.status for c in held} == {"running"}
        cancel_sweep(api, api.get(Sweep, sweep_id))
        api.commit()
        ended = finish_claimed(worker, [c.id for c in held], "unit", "done")
        refresh_sweep(worker, seen)
        worker.commit()
    assert ended == 0
    with sessions() as s:
        assert s.get(Sweep, sweep_id).status == "cancelled"
        assert set(s.scalars(select(Candidate.status))) == {"cancelled"}
    engine.dispose()
