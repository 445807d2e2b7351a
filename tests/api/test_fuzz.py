"""Fuzz the REST API from its own OpenAPI schema (schemathesis): no input gives a 5xx.

One app per database (SQLite and PostgreSQL), with an API token and no dispatcher, on a
database seeded with stored sweeps, candidates and results. Every operation of the schema gets
``MAX_EXAMPLES`` generated requests (derandomized: the same requests every run). Path ids are
drawn half of the time from the seeded rows, so reads reach real sweeps and candidates; submitted
sweeps name a tiny 8-layer model directory half of the time, so validation past the model lookup
is fuzzed too. Write endpoints are called twice: without the token (must be 401) and with it.
Responses must not be 5xx and must match their documented schema and content type.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from frankensweep.api.app import create_app
from frankensweep.core.config import Settings
from frankensweep.evals.registry import eval_key, parse_eval
from frankensweep.search import OverlapSpace, Plan, enumerate_space
from frankensweep.testing.models import tiny_config
from frankensweep.testing.sweeps import seed_sweep, store_scores

TOKEN = "fuzz-token"
MAX_EXAMPLES = 60
PPL = {"kind": "perplexity", "corpus": "pydoc_data.topics", "tokens": 256, "ctx": 128}
EQ = {"kind": "eq_bench", "questions": "q.json", "limit": 2, "max_gen_toks": 80}
WRITES = {"POST", "DELETE", "PUT", "PATCH"}
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


def store_sweep(sessions, model: str, status: str = "done") -> tuple[int, list[int]]:
    """A stored 30-layer overlap sweep: reference + plans, results for most, one failure."""
    t0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
    space = OverlapSpace(num_layers=30, slice_size="8:12:2", jump="3:5:2", last_slice=8)
    points = enumerate_space(space).points
    plans = [(Plan.base(30), {})] + [(p.plan, p.params) for p in points]
    last = len(plans) - 1
    ppl, eq = eval_key(parse_eval(PPL)), eval_key(parse_eval(EQ))
    with sessions() as session:
        sweep = seed_sweep(
            session,
            plans,
            lambda i, plan: {
                "status": "failed" if i == last else "done",
                "error": "out of memory" if i == last else None,
                "started_at": t0,
                "finished_at": t0 + timedelta(seconds=i + 1),
                "attempts": 1,
            },
            name="fuzz",
            model=model,
            num_layers=30,
            space={"kind": "overlap", "slice_size": [8, 12, 2], "jump": [3, 5, 2], "last_slice": 8},
            evals=[PPL, EQ],
            strategy={"kind": "grid"},
            status=status,
            started_at=t0,
        )
        scores = []
        for i, (plan, _params) in enumerate(plans[:last]):
            metrics = {"perplexity": 10.0 + i, "nll": 2.0}
            scores.append((plan, ppl, "perplexity", metrics, {"windows": 2}))
            if i % 2:
                metrics = {"eqbench": 50.0 - i, "percent_parseable": 100.0}
                scores.append((plan, eq, "eq_bench", metrics, {"items": []}))
        store_scores(session, model, scores)
        session.commit()
        return sweep.id, [c.id for c in sweep.candidates]


class Seeded:
    """Ids of stored rows that fuzzed path parameters are drawn from; refilled after deletes."""

    def __init__(self, sessions, model: str) -> None:
        self.sessions, self.model = sessions, model
        self.sweeps: list[int] = []
        self.candidates: list[int] = []
        for status in ("done", "running", "queued"):
            self.add(status)

    def add(self, status: str = "done") -> None:
        sweep_id, candidate_ids = store_sweep(self.sessions, self.model, status)
        self.sweeps.append(sweep_id)
        self.candidates += candidate_ids

    def deleted(self, sweep_id: int) -> None:
        """A fuzzed DELETE removed ``sweep_id``: store another so reads still find rows."""
        if sweep_id in self.sweeps:
            self.sweeps.remove(sweep_id)
            self.add()


@pytest.fixture
def tiny_model_dir(tmp_path: Path) -> str:
    """An 8-layer Llama config directory: a valid model for submissions, read in milliseconds."""
    folder = tmp_path / "tiny-llama"
    tiny_config("llama").save_pretrained(folder)
    return str(folder)


class CurrentApp:
    """The ASGI app the schema's requests go to: the current test's app, swapped per test.

    The schema is loaded at import time (pytest parametrizes over its operations) from an app
    on no database; each test then points this proxy at its own app on its own database, whose
    lifespan the test runs itself.
    """

    def __init__(self) -> None:
        self.app = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":  # the real app's lifespan is run by its fixture
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await self.app(scope, receive, send)


CURRENT = CurrentApp()
schema = schemathesis.openapi.from_dict(
    create_app(Settings(database_url="sqlite://"), dispatch=False).openapi()
)
schema.app = CURRENT


@pytest.fixture
def seeded(database_url, tiny_model_dir, monkeypatch):
    """The current app: token set, no dispatcher, seeded rows; yields the seeded ids."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a fuzzed hub id must fail fast, never download
    settings_ = Settings(
        database_url=database_url,
        broker_url=None,
        api_token=TOKEN,
        max_plans_per_sweep=50,
        max_eval_tokens=4096,
        max_active_sweeps=1_000_000,  # the fuzzer stores many queued sweeps: no 429s
        path_roots=str(Path(tiny_model_dir).parent),  # files named in submissions live here
    )
    app = create_app(settings_, dispatch=False)
    with TestClient(app):  # runs the lifespan: migrations, engine, sessions
        ids = Seeded(app.state.sessions, "/models/SmolLM2.gguf")
        ids.tiny_model_dir = tiny_model_dir
        CURRENT.app, SEEDED[0] = app, ids
        try:
            yield ids
        finally:
            CURRENT.app = None


SEEDED: list[Seeded | None] = [None]


@schema.hook
def flatmap_path_parameters(context, path_parameters):
    """Half of the ids are ones of stored rows (drawn when the request is generated)."""
    ids = SEEDED[0]
    options = [st.just(path_parameters)]
    if not isinstance(path_parameters, dict):
        return options[0]
    if "sweep_id" in path_parameters:
        options.append(st.sampled_from(ids.sweeps).map(lambda i: {"sweep_id": i}))
    if "candidate_id" in path_parameters:
        options.append(st.sampled_from(ids.candidates).map(lambda i: {"candidate_id": i}))
    return st.one_of(*options)


def readable(spec):
    """A perplexity eval spec on the built-in corpus (other fields as generated).

    A spec without ``kind`` becomes a perplexity one: the schema marks ``kind`` optional (each
    spec model has a default) but the union needs it to pick the model, so such schema-valid
    specs are refused with a 422 before anything deeper runs.
    """
    if isinstance(spec, dict) and spec.get("kind", "perplexity") == "perplexity":
        return {**spec, "kind": "perplexity", "corpus": "pydoc_data.topics"}
    return spec


@schema.hook
def flatmap_body(context, body):
    """Two in three submissions name a real (tiny) model and corpus: later checks run."""
    if not isinstance(body, dict) or "model" not in body:
        return st.just(body)
    real = {**body, "model": SEEDED[0].tiny_model_dir}
    if isinstance(body.get("evals"), list):
        real["evals"] = [readable(spec) for spec in body["evals"]]
    return st.sampled_from([body, real, {**real, "evals": [PPL]}])


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_never_answers_5xx(case, seeded):
    if case.operation.method.upper() in WRITES:
        anonymous = case.call(headers={"Authorization": ""})
        case.validate_response(anonymous, checks=[not_a_server_error])
        if case.method.upper() == case.operation.method.upper():
            assert anonymous.status_code in (400, 401, 422), anonymous.text
    response = case.call(headers={"Authorization": f"Bearer {TOKEN}"})
    case.validate_response(response, checks=CHECKS)
    if case.method.upper() == "DELETE" and response.status_code == 204:
        seeded.deleted(case.path_parameters["sweep_id"])


SUBMISSIONS = 150  # valid-shaped submissions: the deepest code path gets more examples


@settings(
    max_examples=SUBMISSIONS,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(case=schema["/api/sweeps"]["POST"].as_strategy())
def test_valid_shaped_submissions_never_answer_5xx(case, seeded):
    """Schema-valid submissions only, half on the tiny model: space and eval checks, storing."""
    response = case.call(headers={"Authorization": f"Bearer {TOKEN}"})
    case.validate_response(response, checks=CHECKS)


NUL_NAME = {"name": "a\x00b"}  # PostgreSQL text cannot hold NUL: was a DataError (500)
HUGE_RANGE = {"space": {"kind": "overlap", "slice_size": [1, 10**30], "jump": 2, "last_slice": 3}}


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        (NUL_NAME, ["body", "name"]),
        (HUGE_RANGE, ["body", "space", "overlap", "slice_size"]),  # was an OverflowError (500)
        ({"space": {"kind": "rys", "filters": {"min_jump": 0}}}, ["body", "space", "rys"]),
        ({"model": "org/name"}, ["body", "model"]),  # hub offline: fails fast, no download
        ({"model": "a\x00b.gguf"}, ["body", "model"]),
    ],
)
def test_inputs_the_fuzzer_found_get_422(seeded, change, loc):
    body = {
        "name": "edge",
        "model": seeded.tiny_model_dir,
        "space": {"kind": "overlap", "slice_size": 4, "jump": 2, "last_slice": 3},
        "evals": [PPL],
    } | change
    with TestClient(CURRENT) as client:
        response = client.post(
            "/api/sweeps", json=body, headers={"Authorization": f"Bearer {TOKEN}"}
        )
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][: len(loc)] == loc


@pytest.mark.parametrize("path", ["/api/sweeps/2147483648", "/api/candidates/9223372036854775808"])
def test_ids_past_the_integer_column_get_422(seeded, path):
    """Was a DataError on PostgreSQL and an OverflowError on SQLite (500)."""
    with TestClient(CURRENT) as client:
        assert client.get(path).status_code == 422
