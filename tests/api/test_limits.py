"""Security limits of the REST API: path roots, hub ids, request size, active sweeps, safe YAML,
and an API token that never reaches the logs."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from test_sweeps_api import count_rows

from frankensweep.api.app import create_app
from frankensweep.api.limits import BodyLimits
from frankensweep.core.config import Settings
from frankensweep.core.paths import is_hub_id
from frankensweep.models import smollm2_path
from frankensweep.testing.models import byte_tokenizer, tiny_config

PPL = {"kind": "perplexity", "corpus": "pydoc_data.topics", "tokens": 256, "ctx": 128}
EXPLICIT = {"kind": "explicit", "plans": ["0-6,2-8"]}
TOKEN = "tok-7f3a9c1e5b2d4086"
PROMPTS = [{"prompt": "The sky is", "wanted": [" blue"], "unwanted": [" green"]}]
#: one EQ-Bench question in the repository's format (submissions read the question set)
REFERENCE = {f"emotion{i}": e for i, e in enumerate(("Angry", "Sad", "Calm", "Proud"), 1)}
QUESTIONS = {
    "1": {
        "prompt": "How does she feel? Your answer:",
        "reference_answer_fullscale": {
            **REFERENCE,
            **{f"emotion{i}_score": i for i in range(1, 5)},
        },
    }
}

#: per field: the file name, the body override naming it, and the loc of a refusal
FIELDS = {
    "model": ("tiny", lambda p: {"model": p}, ["body", "model"]),
    "corpus": (
        "corpus.txt",
        lambda p: {"evals": [{**PPL, "corpus": p}]},
        ["body", "evals", 0, "corpus"],
    ),
    "questions": (
        "q.json",
        lambda p: {"evals": [{"kind": "eq_bench", "questions": p}]},
        ["body", "evals", 0, "questions"],
    ),
    "prompts": (
        "prompts.yaml",
        lambda p: {"evals": [{"kind": "preference", "prompts": p}]},
        ["body", "evals", 0, "prompts"],
    ),
}


def populate(folder: Path) -> Path:
    """A tiny 8-layer model directory, a corpus, a question file and a prompts file."""
    folder.mkdir()
    tiny_config("llama").save_pretrained(folder / "tiny")
    byte_tokenizer().save_pretrained(folder / "tiny")  # EQ-Bench's memory plan reads it
    (folder / "corpus.txt").write_text("hello world\n" * 50)
    (folder / "q.json").write_text(json.dumps(QUESTIONS))
    (folder / "prompts.yaml").write_text(json.dumps(PROMPTS))
    (folder / "inner").mkdir()
    return folder


@pytest.fixture
def root(tmp_path, monkeypatch) -> Path:
    """The only path root; the working directory is elsewhere (and not a root)."""
    monkeypatch.chdir(tmp_path)
    return populate(tmp_path / "root")


@pytest.fixture
def outside(tmp_path) -> Path:
    return populate(tmp_path / "outside")


def body(root: Path, **overrides) -> dict:
    return {"name": "t", "model": str(root / "tiny"), "space": EXPLICIT, "evals": [PPL]} | overrides


def client_for(database_url: str, root: Path, **settings) -> TestClient:
    settings = Settings(database_url=database_url, path_roots=str(root), **settings)
    return TestClient(create_app(settings, dispatch=False))


def name_of(how: str, base: Path, root: Path, file: str, monkeypatch) -> str:
    """``file`` of ``base`` named four ways: absolute, through ``..``, a symlink in the root, ~."""
    if how == "absolute":
        return str(base / file)
    if how == "traversal":
        return f"{root}/inner/../../{base.name}/{file}"
    if how == "symlink":
        link = root / f"link-{file}"
        link.symlink_to(base / file)
        return str(link)
    monkeypatch.setenv("HOME", str(base))
    return f"~/{file}"


HOWS = ["absolute", "traversal", "symlink", "home"]


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("field", FIELDS)
def test_files_outside_the_roots_get_422_naming_the_field_and_store_nothing(
    database_url, root, outside, monkeypatch, field, how
):
    file, override, loc = FIELDS[field]
    name = name_of(how, outside, root, file, monkeypatch)
    with client_for(database_url, root) as c:
        response = c.post("/api/sweeps", json=body(root, **override(name)))
    assert response.status_code == 422, response.text
    (detail,) = response.json()["detail"]
    assert detail["loc"] == loc
    assert "not a file under the allowed roots" in detail["msg"]
    assert str(root) in detail["msg"] and "FRANKENSWEEP_PATH_ROOTS" in detail["msg"]
    assert count_rows(database_url) == (0, 0, 0)


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("field", FIELDS)
def test_the_same_names_inside_the_roots_are_accepted(database_url, root, monkeypatch, field, how):
    file, override, _ = FIELDS[field]
    name = name_of(how, root, root, file, monkeypatch)
    with client_for(database_url, root) as c:
        response = c.post("/api/sweeps", json=body(root, **override(name)))
    assert response.status_code == 201, response.text
    assert count_rows(database_url)[0] == 1


def test_a_file_outside_gets_the_same_answer_whether_it_exists_or_not(database_url, root, outside):
    with client_for(database_url, root) as c:
        answers = [
            c.post("/api/sweeps", json=body(root, model=str(outside / name))).json()["detail"]
            for name in ("tiny", "no-such-model")
        ]
    exists, missing = (a[0]["msg"] for a in answers)
    assert missing.replace("no-such-model", "tiny") == exists


BAD_HUB_IDS = [
    "gpt2",  # no owner
    "-org/name",
    ".org/name",
    "org/.name",
    "org/..",
    "org/na..me",
    "org--x/name",
    "org/name/extra",
    "org/na me",
    "org/name\n",
    "../org/name",
    "org/name;rm -rf",
    "",
    "o" * 97 + "/name",
]


@pytest.mark.parametrize("hub_id", BAD_HUB_IDS)
def test_hub_id_pattern(hub_id):
    assert not is_hub_id(hub_id)


@pytest.mark.parametrize(
    "hub_id", ["HuggingFaceTB/SmolLM2-135M-Instruct", "pbevan11/EQ-Bench", "a/b", "o_1/n.2-x"]
)
def test_good_hub_ids(hub_id):
    assert is_hub_id(hub_id)


@pytest.mark.parametrize("field", ["model", "questions"])
def test_names_neither_under_a_root_nor_hub_ids_get_422(database_url, root, field):
    _, override, loc = FIELDS[field]
    with client_for(database_url, root) as c:
        for hub_id in ("gpt2", "-org/name", "org/na..me", "org/name/extra", "../org/name"):
            response = c.post("/api/sweeps", json=body(root, **override(hub_id)))
            assert response.status_code == 422, (hub_id, response.text)
            (detail,) = response.json()["detail"]
            assert detail["loc"] == loc and "nor a hub id like owner/name" in detail["msg"]
    assert count_rows(database_url) == (0, 0, 0)


def test_a_good_hub_id_passes_the_path_check_and_fails_fast_offline(database_url, root):
    with client_for(database_url, root) as c:
        start = time.monotonic()
        response = c.post("/api/sweeps", json=body(root, model="someorg/no-such-model"))
        seconds = time.monotonic() - start
        questions = {"kind": "eq_bench", "questions": "pbevan11/EQ-Bench", "limit": 2}
        hub_questions = c.post("/api/sweeps", json=body(root, evals=[questions]))
    assert response.status_code == 422, response.text
    (detail,) = response.json()["detail"]
    assert detail["loc"] == ["body", "model"]
    assert "cannot read the config of someorg/no-such-model" in detail["msg"]
    assert seconds < 30  # HF_HUB_OFFLINE=1 (tests/conftest.py): no retries against the hub
    # an unreachable hub dataset is known bad at submission (it was accepted, then failed
    # every candidate): 422 naming the field, and why
    assert hub_questions.status_code == 422, hub_questions.text
    (detail,) = hub_questions.json()["detail"]
    assert detail["loc"] == ["body", "evals", 0]
    assert "cannot load EQ-Bench questions from hub dataset 'pbevan11/EQ-Bench'" in detail["msg"]
    assert count_rows(database_url)[0] == 0  # neither was stored


def test_oversize_bodies_get_413_with_or_without_content_length(database_url, root):
    big = body(root, space={"kind": "explicit", "plans": ["0-6,2-8"] * 1000})
    data = json.dumps(big).encode()
    assert len(data) > 8192
    with client_for(database_url, root, max_request_bytes=8192) as c:
        declared = c.post("/api/sweeps", content=data, headers={"content-type": "application/json"})
        chunks = (data[i : i + 1000] for i in range(0, len(data), 1000))
        streamed = c.post(
            "/api/sweeps", content=chunks, headers={"content-type": "application/json"}
        )
        small = c.post("/api/sweeps", json=body(root))
    assert "content-length" in declared.request.headers
    assert "content-length" not in streamed.request.headers
    assert streamed.request.headers["transfer-encoding"] == "chunked"
    for response in (declared, streamed):
        assert response.status_code == 413, response.text
        assert response.json()["detail"].startswith(
            "request body over 8192 bytes (FRANKENSWEEP_MAX_REQUEST_BYTES)"
        )
    assert small.status_code == 201, small.text
    assert count_rows(database_url)[0] == 1


def test_the_stream_is_counted_even_when_content_length_lies():
    called = []

    async def app(scope, receive, send):  # pragma: no cover - must not run
        called.append(await receive())

    sent = []
    chunks = [{"type": "http.request", "body": b"x" * 600, "more_body": True}] * 3

    async def run() -> None:
        messages = iter(chunks)

        async def receive():
            return next(messages)

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "headers": [(b"content-length", b"10")]}
        await BodyLimits(app, max_bytes=1024)(scope, receive, send)

    asyncio.run(run())
    assert not called
    assert sent[0]["status"] == 413
    assert b"FRANKENSWEEP_MAX_REQUEST_BYTES" in sent[1]["body"]


def test_active_sweeps_are_capped_with_429(database_url, root):
    with client_for(database_url, root, max_active_sweeps=2) as c:
        ids = [c.post("/api/sweeps", json=body(root)).json()["id"] for _ in range(2)]
        refused = c.post("/api/sweeps", json=body(root))
        assert refused.status_code == 429, refused.text
        assert refused.json()["detail"] == (
            "2 sweeps are queued or running, the cap is 2 (FRANKENSWEEP_MAX_ACTIVE_SWEEPS): "
            "wait for one to end, or cancel one"
        )
        assert count_rows(database_url)[0] == 2
        assert c.post(f"/api/sweeps/{ids[0]}/cancel").status_code == 200
        assert c.post("/api/sweeps", json=body(root)).status_code == 201


def test_python_yaml_tags_are_refused_not_executed(database_url, root, tmp_path):
    marker = tmp_path / "pwned"
    payload = f'!!python/object/apply:os.mkdir ["{marker}"]'
    (root / "evil.yaml").write_text(f"- prompt: {payload}\n  wanted: [a]\n  unwanted: [b]\n")
    recipe = f"merge_method: passthrough\nslices: {payload}\n"
    with client_for(database_url, root) as c:
        prompts = c.post(
            "/api/sweeps",
            json=body(root, evals=[{"kind": "preference", "prompts": str(root / "evil.yaml")}]),
        )
        recipes = c.post(
            "/api/sweeps", json=body(root, space={"kind": "explicit", "recipes": [recipe]})
        )
    assert prompts.status_code == 422, prompts.text
    assert prompts.json()["detail"][0]["loc"] == ["body", "evals", 0]
    assert "python/object/apply:os.mkdir" in prompts.json()["detail"][0]["msg"]
    assert recipes.status_code == 422, recipes.text
    assert recipes.json()["detail"][0]["loc"] == ["body", "space", "recipes", 0]
    assert not marker.exists()
    assert count_rows(database_url) == (0, 0, 0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_token_never_reaches_the_logs(database_url, root, caplog):
    caplog.set_level(logging.DEBUG)
    settings = Settings(database_url=database_url, path_roots=str(root), api_token=TOKEN)
    port = free_port()
    config = uvicorn.Config(
        create_app(settings, dispatch=False), port=port, log_level="debug", log_config=None
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started
        url = f"http://127.0.0.1:{port}/api/sweeps"
        with httpx.Client(timeout=30) as http:
            for auth in (f"Bearer {TOKEN}x", f"Bearer x{TOKEN}", f"Token {TOKEN}", "Bearer"):
                response = http.post(url, json=body(root), headers={"Authorization": auth})
                assert response.status_code == 401, response.text
            assert TOKEN not in response.text
            good = {"Authorization": f"Bearer {TOKEN}"}
            created = http.post(url, json=body(root), headers=good)
            assert created.status_code == 201, created.text
            assert http.post(url, json=body(root, model="/etc"), headers=good).status_code == 422
            assert http.get(f"{url}/{created.json()['id']}").status_code == 200
            assert http.delete(f"{url}/{created.json()['id']}", headers=good).status_code == 204
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    names = {r.name for r in caplog.records}
    assert {"uvicorn.error", "uvicorn.access"} <= names, names  # the capture saw the server
    for record in caplog.records:
        text = " ".join(
            [record.getMessage(), repr(record.args), record.exc_text or "", str(record.__dict__)]
        )
        assert TOKEN not in text, (record.name, text)
    assert TOKEN not in caplog.text


@pytest.mark.slow
def test_the_command_line_is_not_restricted_by_path_roots(root, outside):
    corpus = outside / "corpus.txt"
    corpus.write_text("The quick brown fox jumps over the lazy dog.\n" * 40)
    exe = Path(sys.executable).parent / "frankensweep"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "FRANKENSWEEP_PATH_ROOTS": str(root)}
    args = ["eval", "--model", str(smollm2_path()), "--plan", "0-30", "--ppl-corpus", str(corpus)]
    args += ["--ppl-tokens", "128", "--ctx", "64", "--json", "--device", "cpu"]
    proc = subprocess.run([exe, *args], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[0])["perplexity"] > 1
