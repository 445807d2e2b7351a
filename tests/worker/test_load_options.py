"""Workers load a sweep's model as its load options say, and stored scores are never shared
between options that change the numbers (quantization, dtype); placement does not split them.

A small random Llama directory stands in for a base model: bitsandbytes quantizes it in seconds.
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from frankensweep.core.config import Settings
from frankensweep.db import Candidate, Result, make_engine, make_sessionmaker, upgrade
from frankensweep.models import LoadOptions, model_fingerprint
from frankensweep.sweeps.config import model_key
from frankensweep.sweeps.request import SweepCreate
from frankensweep.sweeps.submission import build_sweep, store_sweep
from frankensweep.testing.models import tiny_model_dir
from frankensweep.worker.loading import ModelCache, cache_slot
from frankensweep.worker.runner import run_unit

PLANS = ["0-4,2-6", "0-3,1-6"]
PPL = {"kind": "perplexity", "corpus": "pydoc_data.topics", "tokens": 128, "ctx": 64}


@pytest.fixture
def service(tmp_path):
    model = tiny_model_dir(tmp_path / "tiny", layers=6, vocab_size=512)
    url = f"sqlite:///{tmp_path / 'load.db'}"
    upgrade(url)
    engine = make_engine(url)
    settings = Settings(database_url=url, path_roots=str(tmp_path))
    yield make_sessionmaker(engine), settings, str(model), ModelCache()
    engine.dispose()


def run_sweep(service, load: dict | None):
    """Submit a sweep of PLANS with ``load``, run it in one unit; its key and unit report."""
    sessions, settings, model, models = service
    body = {
        "name": "load",
        "model": model,
        "space": {"kind": "explicit", "plans": PLANS},
        "evals": [PPL],
        **({"load": load} if load is not None else {}),
    }
    submission = build_sweep(SweepCreate.model_validate(body), settings)
    with sessions() as s:
        store_sweep(s, submission)
        ids = list(s.scalars(select(Candidate.id).where(Candidate.sweep_id == submission.sweep.id)))
    report = run_unit(sessions, submission.sweep.id, ids, "test", models, device="cpu")
    assert report.failed == 0
    return submission.sweep.model_key, report


def stored(service, key: str) -> int:
    with service[0]() as s:
        return s.execute(select(func.count()).where(Result.model == key)).scalar_one()


def test_scores_are_kept_apart_by_quantization_and_dtype(service):
    _, _, model, models = service
    plain_key, plain = run_sweep(service, None)
    # the default options keep the key of scores stored before load options existed
    assert plain_key == model_key(model, {"weights": model_fingerprint(model)})
    assert (plain.evaluated, plain.reused) == (3, 0)  # two plans and the base model

    nf4_key, nf4 = run_sweep(service, {"quantization": "nf4"})
    assert nf4_key != plain_key
    assert (nf4.evaluated, nf4.reused) == (3, 0)  # no plain score reused for nf4

    int8_key, int8 = run_sweep(service, {"quantization": "int8"})
    bf16_key, bf16 = run_sweep(service, {"dtype": "bfloat16"})
    assert len({plain_key, nf4_key, int8_key, bf16_key}) == 4
    assert (int8.reused, bf16.reused) == (0, 0)
    assert all(stored(service, key) == 3 for key in (plain_key, nf4_key, int8_key, bf16_key))

    again_key, again = run_sweep(service, {"quantization": "nf4", "dtype": "auto"})
    assert again_key == nf4_key and (again.evaluated, again.reused) == (0, 3)
    placed_key, placed = run_sweep(
        service, {"quantization": "nf4", "device_map": "auto", "max_memory": {"cpu": "1GiB"}}
    )
    assert placed_key == nf4_key and placed.reused == 3  # placement does not change the numbers

    # the worker loaded each as its sweep said: one cache slot per load, bitsandbytes modules
    nf4_model = models.get(model, "cpu", key=nf4_key, load=LoadOptions(quantization="nf4"))
    assert type(nf4_model.model.model.layers[0].mlp.up_proj).__name__ == "Linear4bit"
    int8_model = models.get(model, "cpu", key=int8_key, load=LoadOptions(quantization="int8"))
    assert type(int8_model.model.model.layers[0].mlp.up_proj).__name__ == "Linear8bitLt"
    assert len(models._models) == 5  # plain, nf4, int8, bf16, nf4 dispatched by device_map


def test_cache_slots_resolve_auto_and_tell_options_apart():
    auto = cache_slot("m", "cpu", LoadOptions())
    assert auto == cache_slot("m", "cpu", LoadOptions(dtype="float32"))  # auto is fp32 on CPU
    assert auto == cache_slot("m", "auto", LoadOptions(dtype="fp32"))
    assert auto != cache_slot("m", "cpu", LoadOptions(quantization="nf4"))
    assert auto != cache_slot("m", "cpu", LoadOptions(device_map="auto"))
