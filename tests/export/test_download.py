"""A stored candidate leaves the service as a GGUF file (``GET .../export.gguf``, streamed) and as
an HF directory: through the API, and through ``frankensweep export --candidate`` on a live server.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import torch
import uvicorn
import yaml
from fastapi.testclient import TestClient

from frankensweep.api.app import create_app
from frankensweep.core.config import Settings
from frankensweep.core.net import free_port
from frankensweep.export.gguf import prepare_gguf
from frankensweep.models import smollm2_path
from frankensweep.search import Plan
from frankensweep.testing.processes import run_cli
from frankensweep.testing.sweeps import seed_sweep
from frankensweep.worker.views import build_view

OVERLAP = "0-16,8-24,16-30"


def store(app, model: str) -> list[int]:
    """A finished 30-layer sweep of ``model``: the reference and one overlap plan."""
    with app.state.sessions() as session:
        sweep = seed_sweep(
            session,
            [(Plan.base(30), {}), (Plan.parse(OVERLAP), {})],
            lambda i, plan: {"status": "done", "attempts": 1},
            name="export",
            model=model,
            num_layers=30,
            space={"kind": "explicit", "plans": [OVERLAP]},
            evals=[{"kind": "perplexity", "corpus": "pydoc_data.topics", "tokens": 256}],
            strategy={"kind": "grid"},
            status="done",
        )
        session.commit()
        return [c.id for c in sweep.candidates]


@pytest.fixture
def app(tmp_path):
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'export.db'}", broker_url=None)
    app = create_app(settings, dispatch=False)
    with TestClient(app):  # the lifespan migrates the database
        yield app


@pytest.fixture
def live(app) -> Iterator[str]:
    """``app`` served on a free loopback port."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(30)


def test_the_api_streams_the_candidate_s_gguf(app, tmp_path):
    _, candidate = store(app, str(smollm2_path()))
    expected = tmp_path / "local.gguf"
    prepare_gguf(smollm2_path(), OVERLAP).write(expected)
    with TestClient(app) as client:
        response = client.get(f"/api/candidates/{candidate}/export.gguf")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    assert f'filename="candidate-{candidate}.gguf"' in response.headers["content-disposition"]
    assert int(response.headers["content-length"]) == expected.stat().st_size
    assert response.content == expected.read_bytes()


def test_the_api_answers_4xx_for_what_cannot_be_exported(app):
    _, hf_candidate = store(app, "org/model")
    _, gone = store(app, "/no/such/model.gguf")
    with TestClient(app) as client:
        refused = client.get(f"/api/candidates/{hf_candidate}/export.gguf")
        missing = client.get(f"/api/candidates/{gone}/export.gguf")
        unknown = client.get("/api/candidates/999999/export.gguf")
    assert refused.status_code == 422
    detail = refused.json()["detail"][0]
    assert detail["loc"] == ["path", "candidate_id"]
    assert detail["msg"].startswith("GGUF export needs a .gguf base model")
    assert missing.status_code == 422 and "model file not found" in missing.text
    assert unknown.status_code == 404


@pytest.mark.slow
def test_export_candidate_through_a_live_server(app, live, tmp_path, smollm2):
    _, candidate = store(app, str(smollm2_path()))
    out = tmp_path / "winner.gguf"
    proc = run_cli(
        "export", "--candidate", str(candidate), "-f", "gguf", "-o", str(out), "--url", live
    )
    local = tmp_path / "local.gguf"
    prepare_gguf(smollm2_path(), OVERLAP).write(local)
    assert out.read_bytes() == local.read_bytes() and "wrote" in proc.stderr
    recipe = run_cli("export", "--candidate", str(candidate), "--url", live).stdout
    assert yaml.safe_load(recipe)["slices"][1]["sources"][0]["layer_range"] == [8, 24]

    # the HF directory: the candidate's plan and model come from the server, the weights from here
    folder = tmp_path / "winner-hf"
    run_cli("export", "--candidate", str(candidate), "-f", "hf", "-o", str(folder), "--url", live)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert loaded.config.num_hidden_layers == 46
    text = "The three primary colours are red, yellow and"
    ids = smollm2.tokenizer(text, return_tensors="pt").input_ids
    assert torch.equal(tokenizer(text, return_tensors="pt").input_ids, ids)
    view = build_view(smollm2.model, Plan.parse(OVERLAP))
    with torch.inference_mode():
        assert torch.equal(loaded(ids).logits, view(ids, use_cache=False).logits)
    assert {p.name for p in folder.iterdir()} >= {"config.json", "model.safetensors"}
    assert not list(tmp_path.glob(".*partial"))


def test_download_reports_a_refusal_in_one_line(app, live, tmp_path):
    _, candidate = store(app, "org/model")
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "x.gguf"
    proc = run_cli(
        "export",
        "--candidate",
        str(candidate),
        "-f",
        "gguf",
        "-o",
        str(out),
        "--url",
        live,
        check=False,
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: ")
    assert "GGUF export needs a .gguf base model" in proc.stderr
    assert list((tmp_path / "out").iterdir()) == []
    assert httpx.get(f"{live}/healthz").status_code == 200
