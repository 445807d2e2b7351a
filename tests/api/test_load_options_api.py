"""Load options over the API: stored with the sweep, bad ones refused with 422 naming the field
and nothing stored (SQLite and PostgreSQL; no worker runs)."""

from __future__ import annotations

import json
import sys

import pytest
from fastapi.testclient import TestClient

from frankensweep.api.app import create_app
from frankensweep.core.config import Settings
from frankensweep.models import smollm2_path
from frankensweep.testing.models import tiny_model_dir

PPL = {"kind": "perplexity", "corpus": "pydoc_data.topics", "tokens": 128, "ctx": 64}


def body(load=None, model=None) -> dict:
    sweep = {
        "name": "load",
        "model": model or str(smollm2_path()),
        "space": {"kind": "explicit", "plans": ["0-20,10-30"]},
        "evals": [PPL],
    }
    return sweep | ({"load": load} if load is not None else {})


@pytest.fixture
def client(database_url, tmp_path):
    settings = Settings(database_url=database_url, path_roots=f"{tmp_path}:{smollm2_path().parent}")
    with TestClient(create_app(settings, dispatch=False)) as c:
        yield c


def test_load_options_are_stored_with_the_sweep_and_shown(client):
    load = {
        "quantization": "nf4",
        "dtype": "bf16",
        "device_map": "auto",
        "max_memory": {"cpu": 8 << 30},
    }
    created = client.post("/api/sweeps", json=body(load))
    assert created.status_code == 201, created.text
    sweep = client.get(f"/api/sweeps/{created.json()['id']}").json()
    assert sweep["load"] == {
        "quantization": "nf4",
        "dtype": "bfloat16",  # aliases are stored by their canonical name
        "device_map": "auto",
        "max_memory": {"cpu": 8 << 30},
    }
    plain = client.post("/api/sweeps", json=body()).json()  # none given: the settings' defaults
    assert client.get(f"/api/sweeps/{plain['id']}").json()["load"] == {
        "quantization": "none",
        "dtype": "auto",
        "device_map": None,
        "max_memory": None,
    }


@pytest.mark.parametrize(
    ("load", "loc", "message"),
    [
        ({"quantization": "q4_k"}, ["body", "load", "quantization"], "'none', 'nf4' or 'int8'"),
        ({"dtype": "fp8"}, ["body", "load", "dtype"], "unknown dtype 'fp8'"),
        ({"device_map": "balanced"}, ["body", "load", "device_map"], "'auto'"),
        ({"max_memory": {"0": "1GiB"}}, ["body", "load", "max_memory"], "add device_map: auto"),
        (
            {"device_map": "auto", "max_memory": {"gpu": "1GiB"}},
            ["body", "load", "max_memory"],
            "unknown device 'gpu'",
        ),
        (
            {"device_map": "auto", "max_memory": {"0": "lots"}},
            ["body", "load", "max_memory"],
            "'lots' is not a size",
        ),
        (  # embedded mode: the GPU must be on this machine (CI has none)
            {"device_map": "auto", "max_memory": {"cuda:7": "70GiB"}},
            ["body", "load", "max_memory"],
            "names GPU 7, but this machine has",
        ),
        ({"quantization": "nf4", "colour": 1}, ["body", "load", "colour"], "Extra inputs"),
    ],
)
def test_bad_load_options_get_422_naming_the_field_and_store_nothing(client, load, loc, message):
    response = client.post("/api/sweeps", json=body(load))
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert any(d["loc"][: len(loc)] == loc and message in d["msg"] for d in detail), detail
    assert client.get("/api/sweeps").json() == []  # nothing stored


def test_quantization_without_bitsandbytes_gets_422(client, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as if it were not installed
    response = client.post("/api/sweeps", json=body({"quantization": "int8"}))
    assert response.status_code == 422
    (detail,) = response.json()["detail"]
    assert detail["loc"] == ["body", "load", "quantization"]
    assert "needs bitsandbytes, which is not installed" in detail["msg"]
    assert client.get("/api/sweeps").json() == []  # nothing stored


@pytest.fixture
def gptq_dir(tmp_path):
    """A small checkpoint whose config says it is GPTQ-quantized (no GPTQ kernels here)."""
    path = tiny_model_dir(tmp_path / "gptq", layers=2, vocab_size=512)
    config = json.loads((path / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "gptq", "bits": 4, "group_size": 128}
    (path / "config.json").write_text(json.dumps(config))
    return path


def test_pre_quantized_checkpoint_names_what_is_missing(client, gptq_dir):
    response = client.post("/api/sweeps", json=body(model=str(gptq_dir)))
    assert response.status_code == 422
    (detail,) = response.json()["detail"]
    assert detail["loc"] == ["body", "model"]
    assert "is quantized with gptq, which this machine cannot load:" in detail["msg"]
    twice = client.post("/api/sweeps", json=body({"quantization": "nf4"}, model=str(gptq_dir)))
    assert twice.status_code == 422
    assert "already quantized (gptq): load it as it is" in twice.json()["detail"][0]["msg"]
    assert client.get("/api/sweeps").json() == []  # nothing stored
