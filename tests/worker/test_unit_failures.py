"""Work units that cannot finish: worker deaths, time limits, out of memory (SmolLM2, SQLite)."""

from __future__ import annotations

import pytest

from frankensweep.core.config import Settings
from frankensweep.db import (
    Candidate,
    CandidateStatus,
    Sweep,
    make_engine,
    make_sessionmaker,
    upgrade,
)
from frankensweep.db.store import claim
from frankensweep.models import smollm2_path
from frankensweep.sweeps.request import SweepCreate
from frankensweep.sweeps.rounds import advance
from frankensweep.sweeps.status import fail_claimed
from frankensweep.sweeps.submission import build_sweep, store_sweep
from frankensweep.worker.loading import ModelCache
from frankensweep.worker.runner import failure, run_unit

PLANS = ["0-20,10-30", "0-16,8-30", "0-24,12-30"]
PPL = {"kind": "perplexity", "corpus": "pydoc_data.topics", "tokens": 128, "ctx": 64}


@pytest.fixture
def sweep(tmp_path, smollm2):
    """A stored 3-plan sweep (+ the base model) and a model cache holding SmolLM2."""
    url = f"sqlite:///{tmp_path / 'units.db'}"
    upgrade(url)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    body = {
        "name": "units",
        "model": str(smollm2_path()),
        "space": {"kind": "explicit", "plans": PLANS},
        "evals": [PPL],
    }
    submission = build_sweep(SweepCreate.model_validate(body), Settings(database_url=url))
    with sessions() as s:
        store_sweep(s, submission)
    models = ModelCache()
    models.put(smollm2, "cpu", "float32")
    yield sessions, submission.sweep.id, models
    engine.dispose()


def candidates(sessions, sweep_id: int) -> list[Candidate]:
    with sessions() as s:
        return list(s.query(Candidate).filter_by(sweep_id=sweep_id).order_by(Candidate.ordinal))


def test_a_candidate_whose_worker_keeps_dying_fails_and_the_rest_goes_on(sweep):
    sessions, sweep_id, models = sweep
    ids = [c.id for c in candidates(sessions, sweep_id)]
    with sessions() as s:
        for _ in range(4):  # delivered 4 times, its worker killed each time (OOM killer, ...)
            claim(s, ids[1:2], "celery:doomed")
    run = dict(device="cpu", dtype="float32", max_attempts=4)
    run_unit(sessions, sweep_id, ids[1:2], "celery:doomed", models, **run)  # the 5th delivery
    run_unit(sessions, sweep_id, [ids[0], *ids[2:]], "celery:other", models, **run)
    by_id = {c.id: c for c in candidates(sessions, sweep_id)}
    doomed = by_id[ids[1]]
    assert doomed.status == CandidateStatus.failed and doomed.attempts == 5
    assert doomed.error.startswith("gave up after 4 attempts: the worker evaluating it died")
    assert all(by_id[i].status == CandidateStatus.done for i in ids if i != ids[1])
    advance(sessions, sweep_id)
    with sessions() as s:
        assert s.get(Sweep, sweep_id).status == "done"


def test_a_unit_over_its_time_limit_fails_what_it_holds_and_the_sweep_goes_on(sweep):
    sessions, sweep_id, models = sweep
    ids = [c.id for c in candidates(sessions, sweep_id)]
    with sessions() as s:
        claim(s, ids[:2], "celery:slow")  # the unit the soft time limit interrupted
        assert fail_claimed(s, sweep_id, "celery:slow", "time limit exceeded: ...") == 2
        assert fail_claimed(s, sweep_id, "celery:slow", "again") == 0  # idempotent
    run_unit(sessions, sweep_id, ids[2:], "celery:next", models, device="cpu", dtype="float32")
    statuses = [c.status for c in candidates(sessions, sweep_id)]
    assert statuses == ["failed", "failed", "done", "done"]
    assert candidates(sessions, sweep_id)[0].error == "time limit exceeded: ..."
    advance(sessions, sweep_id)
    with sessions() as s:
        assert s.get(Sweep, sweep_id).status == "done"


def test_out_of_memory_errors_say_so():
    cpu = RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 GB")
    assert failure("perplexity", cpu) == (
        "perplexity: out of memory: RuntimeError: DefaultCPUAllocator: can't allocate memory: "
        "you tried to allocate 8 GB"
    )
    assert failure("eq_bench", MemoryError()) == "eq_bench: out of memory: MemoryError:"
    cuda = type("OutOfMemoryError", (RuntimeError,), {})("CUDA out of memory. Tried to allocate")
    assert failure("perplexity", cuda).startswith("perplexity: out of memory: OutOfMemoryError")
    assert failure("perplexity", ValueError("bad")) == "perplexity: ValueError: bad"
