"""The memory planner at submission: a sweep that cannot fit the worker memory gets a 422 that
names what to change and stores nothing; one that fits is stored with its estimate, shown by
the API and the dashboard (SQLite and PostgreSQL; no worker runs). The setting, and the
command line refusing the same way."""

from __future__ import annotations

import os
import subprocess

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from frankensweep.api.app import create_app
from frankensweep.api.dashboard.routes import memory_text
from frankensweep.core.config import Settings
from frankensweep.evals.registry import parse_eval
from frankensweep.models import LoadOptions
from frankensweep.models.memory import fmt_size
from frankensweep.search import Plan
from frankensweep.sweeps.memory import sweep_memory
from frankensweep.testing.models import tiny_model_dir
from frankensweep.testing.processes import EXE, cli_env

PPL = {"kind": "perplexity", "corpus": "pydoc_data.topics", "tokens": 128, "ctx": 64}
SHALLOW, DEEP = "0-2,1-4", "0-4,0-4,0-4,0-4"  # 5 and 16 positions of a 4-layer model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory.mktemp("tiny") / "llama", layers=4, vocab_size=512)


def body(model, plan: str) -> dict:
    space = {"kind": "explicit", "plans": [plan]}
    return {"name": "memory", "model": str(model), "space": space, "evals": [PPL]}


def planned(model, plan: str, settings: Settings):
    """What the planner says of a sweep whose deepest plan is ``plan`` (the model's own plan
    when it is deeper)."""
    deepest = max([Plan.parse(plan), Plan.base(4)], key=len)
    evals = [parse_eval(PPL)]
    return sweep_memory(str(model), LoadOptions(), evals, deepest, settings)


@pytest.fixture
def client_and_limit(database_url, tiny):
    """A client whose worker memory lies between what the shallow and the deep sweeps need."""
    probe = Settings(worker_memory="1GiB")
    shallow = planned(tiny, SHALLOW, probe).estimate.total
    deep = planned(tiny, DEEP, probe).estimate.total
    assert shallow < deep
    limit = (shallow + deep) // 2
    settings = Settings(
        database_url=database_url, path_roots=str(tiny.parent), worker_memory=str(limit)
    )
    with TestClient(create_app(settings, dispatch=False)) as c:
        yield c, settings


def test_a_sweep_that_cannot_fit_gets_422_naming_what_to_change_and_stores_nothing(
    client_and_limit, tiny
):
    client, settings = client_and_limit
    kept = client.post("/api/sweeps", json=body(tiny, SHALLOW))
    assert kept.status_code == 201, kept.text
    before = client.get("/api/sweeps").json()
    response = client.post("/api/sweeps", json=body(tiny, DEEP))
    assert response.status_code == 422, response.text
    (detail,) = response.json()["detail"]
    deep = planned(tiny, DEEP, settings)
    assert detail["loc"] == ["body", "evals", 0]  # the perplexity eval reaches the peak
    message = detail["msg"]
    assert f"a worker would need about {fmt_size(deep.estimate.total)}" in message
    assert f"over the worker memory of {fmt_size(deep.limit)} (FRANKENSWEEP_WORKER_MEMORY)" in (
        message
    )
    assert "its deepest plan has 16 positions" in message
    largest = deep.estimate.largest(3)
    assert f"largest parts: {largest[0][0]} {fmt_size(largest[0][1])}" in message
    assert "To fit:" in message and "search a shallower space" in message
    assert "quantize the model" in message  # the weights are among the largest parts
    assert client.get("/api/sweeps").json() == before  # nothing stored
    assert len(before) == 1


def test_weights_over_the_limit_name_the_quantization(database_url, tiny):
    settings = Settings(database_url=database_url, path_roots=str(tiny.parent), worker_memory="1")
    with TestClient(create_app(settings, dispatch=False)) as client:
        response = client.post("/api/sweeps", json=body(tiny, SHALLOW))
        assert response.status_code == 422
        (detail,) = response.json()["detail"]
        assert detail["loc"] == ["body", "load", "quantization"]
        assert "over the worker memory of 1 B" in detail["msg"]
        assert client.get("/api/sweeps").json() == []


def test_the_estimate_is_stored_and_shown(client_and_limit, tiny):
    client, settings = client_and_limit
    created = client.post("/api/sweeps", json=body(tiny, SHALLOW))
    assert created.status_code == 201, created.text
    sweep_id = created.json()["id"]
    memory = client.get(f"/api/sweeps/{sweep_id}").json()["memory"]
    expected = planned(tiny, SHALLOW, settings)
    assert memory == expected.to_json()
    assert memory["estimate_bytes"] == expected.estimate.total <= memory["limit_bytes"]
    assert memory["deepest_positions"] == 5 and memory["device"] in ("cpu", "cuda")
    assert set(memory["parts"]) == {
        "weights",
        "loading",
        "kv_cache",
        "prefix_states",
        "logits",
        "activations",
    }
    assert memory["parts"]["weights"] > 0 and memory["parts"]["prefix_states"] > 0
    listed = client.get("/api/sweeps").json()
    assert [s["memory"] for s in listed] == [memory]
    page = client.get(f"/sweeps/{sweep_id}")
    assert page.status_code == 200
    line = memory_text(memory)
    assert f'<dd id="memory">{line}</dd>' in page.text
    assert line.startswith(f"{fmt_size(memory['estimate_bytes'])} of ")
    assert f"weights {fmt_size(memory['parts']['weights'])}" in line


def test_worker_memory_setting():
    assert Settings(worker_memory="24GiB").worker_memory_bytes() == 24 << 30
    assert Settings(worker_memory="1000000").worker_memory_bytes() == 1_000_000
    with pytest.raises(ValidationError, match="FRANKENSWEEP_WORKER_MEMORY: 'lots' is not a size"):
        Settings(worker_memory="lots")
    import torch

    if torch.cuda.is_available():
        total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    else:
        total = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 0.8)
    assert Settings(worker_memory="").worker_memory_bytes() == total


def test_eval_refuses_plans_that_cannot_fit_with_one_error_line(tiny):
    env = {**cli_env(), "FRANKENSWEEP_WORKER_MEMORY": "1MB"}
    command = [EXE, "eval", "--model", str(tiny), "--plan", DEEP, "--ppl-tokens", "128"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: a worker would need about "), lines[0]
    assert "its deepest plan has 16 positions" in lines[0]
    assert "over the worker memory of 977 KiB" in lines[0]
    assert proc.stdout == ""


def test_every_eval_kind_is_planned_on_the_deepest_plan(tiny, shared_data):
    """EQ-Bench: its longest prompt in the model's tokens (the tiny byte-level tokenizer has no
    chat template: one token a byte) and max_gen_toks; preference: all its rows in one forward."""
    from frankensweep.evals.eq_bench import load_questions
    from frankensweep.models import read_config
    from frankensweep.models.memory import Generation, Windows, estimate

    questions = shared_data / "eq-bench" / "eq_bench_v2_questions_171.json"
    prompts = [{"prompt": "ab", "wanted": ["cd"], "unwanted": ["efg", "h"]}]
    evals = [
        parse_eval(PPL),
        parse_eval({"kind": "eq_bench", "questions": str(questions), "limit": 3}),
        parse_eval({"kind": "preference", "prompts": prompts}),
    ]
    settings = Settings(worker_memory="1GiB")
    found = sweep_memory(str(tiny), LoadOptions(), evals, Plan.parse(DEEP), settings)
    longest = max(len(r["prompt"].encode()) for r in load_questions(questions, 3))
    config, layers = read_config(str(tiny)), Plan.parse(DEEP).layers()
    budget = settings.prefix_memory_budget
    work = [Windows(1, 64, budget), Generation(1, longest, 80), Windows(3, 5, 0, "preference")]
    expected = estimate(config, "none", "float32", layers, work)
    assert found.estimate == expected
    assert set(found.estimate.workloads) == {"perplexity", "eq_bench", "preference"}
    # batch auto (the default): checked at batch 1, then the largest batch that fits, at most
    # every question (3 of them fit in 1 GiB)
    assert found.eq_batch == 3 and found.deepest == 16
