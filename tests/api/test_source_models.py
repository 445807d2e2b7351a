"""Sweeps over several models and scaled plans through the embedded service (SQLite and
PostgreSQL): interleaves of two saved tiny models, repeat spaces with scales searched by TPE,
and every way a submission can name models or scales wrongly (422, nothing stored)."""

from __future__ import annotations

import optuna
import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from frankensweep.api.app import create_app
from frankensweep.core.config import Settings
from frankensweep.db import Candidate, Result, Sweep
from frankensweep.evals.corpus import bundled_text
from frankensweep.evals.perplexity import make_windows, perplexity, tokenize_corpus
from frankensweep.models import LoadOptions
from frankensweep.search import Plan, plan_to_recipe, recipe_to_plan
from frankensweep.strategies.model_based import study_name
from frankensweep.sweeps.config import current_model_key, model_identity
from frankensweep.testing.models import tiny_model_dir
from frankensweep.testing.sweeps import count_rows, wait_sweep
from frankensweep.worker.loading import load_base_model
from frankensweep.worker.views import build_view

LAYERS = 6
PPL = {"kind": "perplexity", "corpus": "pydoc_data.topics", "tokens": 128, "ctx": 64}
INTERLEAVE = {
    "kind": "interleave",
    "models": ["base", "other"],
    "slice_size": [2, 4],
    "overlap": [0, 2],
    "first": ["base", "other"],
}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    """Saved tiny Llamas: base and other (same config, other weights), and two misfits."""
    root = tmp_path_factory.mktemp("source-models")
    return {
        "root": str(root),
        "base": str(tiny_model_dir(root / "base", layers=LAYERS, seed=0)),
        "other": str(tiny_model_dir(root / "other", layers=LAYERS, seed=1)),
        "deep": str(tiny_model_dir(root / "deep", layers=LAYERS + 2, seed=2)),
        "vocab": str(tiny_model_dir(root / "vocab", layers=LAYERS, vocab_size=4096, seed=3)),
    }


def settings(url: str, root: str, **more) -> Settings:
    return Settings(
        database_url=url, path_roots=root, device="cpu", dtype="float32", unit_size=4, **more
    )


def body(paths: dict[str, str], **overrides) -> dict:
    return {
        "name": "interleave",
        "model": paths["base"],
        "models": {"other": paths["other"]},
        "space": INTERLEAVE,
        "evals": [PPL],
    } | overrides


def direct_perplexities(models: dict[str, str], plans: list[Plan]) -> dict[str, float]:
    """Each plan's perplexity computed here, with views over models loaded here."""
    base = load_base_model(models["base"], "cpu", "float32")
    other = load_base_model(models["other"], "cpu", "float32")
    ids = tokenize_corpus(base.tokenizer, bundled_text())
    windows = make_windows(ids, PPL["tokens"], PPL["ctx"])
    return {
        str(p): perplexity(build_view(base.model, p, {"other": other.model}), windows).perplexity
        for p in plans
    }


def test_an_interleave_of_two_saved_models_runs_through_the_service(database_url, models):
    with TestClient(create_app(settings(database_url, models["root"]))) as client:
        created = client.post("/api/sweeps", json=body(models))
        assert created.status_code == 201, created.text
        summary = created.json()["space"]
        assert summary["size"] == 3 * 3 * 2  # slice sizes 2..4, overlaps 0..2, two firsts
        sweep = wait_sweep(client, created.json()["id"])
        assert sweep["status"] == "done" and sweep["models"] == {"other": models["other"]}
        board = client.get(f"/api/sweeps/{sweep['id']}/leaderboard").json()
        rows = board["rows"]
        assert len(rows) == summary["kept"] and all(r["status"] == "done" for r in rows)
        assert any(r["plan"].startswith("0-2@other") for r in rows)  # other model first
        recipe_text = client.get(f"/api/candidates/{rows[0]['candidate_id']}/recipe.yaml").text
    # every stored perplexity is the plan's, with the other model's layers where it says so
    plans = [Plan.parse(r["plan"]) for r in rows] + [Plan.base(LAYERS)]
    want = direct_perplexities(models, plans)
    got = {r["plan"]: r["scores"]["perplexity"] for r in rows}
    got[board["reference"]["plan"]] = board["reference"]["scores"]["perplexity"]
    assert got == want
    # the recipe takes each slice from its model's directory, the ends from the base model
    recipe = yaml.safe_load(recipe_text)
    assert recipe["base_model"] == models["base"]
    ends = [recipe["slices"][0], recipe["slices"][-1]]
    assert all(s["sources"][0]["model"] == models["base"] for s in ends)
    read = recipe_to_plan(recipe_text, models["base"], {models["other"]: "other"})
    assert str(read.plan) == rows[0]["plan"]
    # results are kept under the base model with its sources' identity
    engine = create_engine(database_url)
    with Session(engine) as s:
        keys = set(s.scalars(select(Result.model)))
        (load,) = s.scalars(select(Sweep.load_options))
    engine.dispose()
    sources, options = {"other": models["other"]}, LoadOptions.model_validate(load)
    assert keys == {current_model_key(models["base"], sources, options)}
    assert keys != {current_model_key(models["base"], None, options)}  # sources are in the key
    assert model_identity(models["base"], sources)["sources"]["other"]["model"] == models["other"]


def test_control_the_other_models_layers_change_the_scores(models):
    """The check above can fail: the same plans on the base model alone score otherwise."""
    plan = Plan.parse("0-2,2-4@other,4-6")
    with_other = direct_perplexities(models, [plan])[str(plan)]
    alone = direct_perplexities({**models, "other": models["base"]}, [plan])[str(plan)]
    assert with_other != alone


def test_tpe_searches_a_repeat_space_with_scales(tmp_path, models):
    url = f"sqlite:///{tmp_path / 'tpe.db'}"
    space = {
        "kind": "repeat",
        "blocks": [1, 2],
        "repeats": [2, 3],
        "length": [1, 2],
        "scale": [1, 0.75, 0.5],
    }
    payload = body(
        models, models={}, space=space, strategy={"kind": "tpe", "budget": 6, "batch": 3}
    )
    with TestClient(create_app(settings(url, models["root"]))) as client:
        created = client.post("/api/sweeps", json=payload)
        assert created.status_code == 201, created.text
        sweep = wait_sweep(client, created.json()["id"])
        assert sweep["status"] == "done"
    engine = create_engine(url)
    with Session(engine) as s:
        plans = list(s.scalars(select(Candidate).where(Candidate.is_reference.is_(False))))
    engine.dispose()
    assert len(plans) == 6 and all(c.status == "done" for c in plans)
    study = optuna.load_study(study_name=study_name(sweep["id"]), storage=url)
    complete = {t.number: t for t in study.trials if t.state.name == "COMPLETE"}
    searched = set(next(iter(complete.values())).params)
    assert {"i", "j", "k", "scale"} <= searched  # the scale is a searched parameter
    for c in plans:  # each trial is its candidate's parameters
        assert complete[c.trial].params == {k: c.params[k] for k in complete[c.trial].params}
        scales = {s.scale for s in Plan.parse(c.plan).slices} - {None}
        assert scales == ({c.params["scale"]} - {1.0})


def bad_cases(models: dict[str, str]) -> list[tuple[dict, list, str]]:
    other_recipe = plan_to_recipe("0-2,2-4@x,4-6", models["base"], sources={"x": models["deep"]})
    return [
        (
            body(models, models={"other": models["deep"]}),
            ["body", "models", "other"],
            "num_hidden_layers: 8 (base model: 6)",
        ),
        (
            body(models, models={"other": models["vocab"]}),
            ["body", "models", "other"],
            "vocab_size: 4096 (base model: 8192)",
        ),
        (
            body(models, models={"other": models["root"] + "/missing"}),
            ["body", "models", "other"],
            "model file not found",
        ),
        (
            body(models, models={"other": models["root"]}),
            ["body", "models", "other"],
            "source model other: ",
        ),
        (body(models, models={"other": "/elsewhere/model"}), ["body", "models", "other"], ""),
        (
            body(models, models={"base": models["other"]}),
            ["body", "models", "base"],
            "names the base model",
        ),
        (body(models, models={"a b": models["other"]}), ["body", "models"], ""),
        (
            body(models, space={**INTERLEAVE, "models": ["base", "third"]}),
            ["body", "space", "models", 1],
            "third is not a declared source model",
        ),
        (
            body(models, space={"kind": "explicit", "plans": ["0-3,3-6@third"]}),
            ["body", "space", "plans", 0],
            "takes a slice from third, which the sweep does not",
        ),
        (
            body(models, models={}, space={"kind": "explicit", "plans": ["0-3,3-6@other"]}),
            ["body", "space", "plans", 0],
            "declare it in models",
        ),
        (
            body(models, space={"kind": "explicit", "recipes": [other_recipe]}),
            ["body", "space", "recipes", 0],
            "which is neither the base model",
        ),
        (
            body(models, space={"kind": "explicit", "plans": ["0-4,2-6*0"]}),
            ["body", "space", "plans"],
            "scale must be a finite number > 0",
        ),
        (
            body(models, space={"kind": "explicit", "plans": ["0-4,2-6*nan"]}),
            ["body", "space", "plans"],
            "write a positive number after",
        ),
        (
            body(models, space={"kind": "repeat", "scale": [1, -0.5]}),
            ["body", "space", "repeat", "scale"],
            "",
        ),
        (
            body(models, space={"kind": "repeat", "scale": [0.5, 0.5]}),
            ["body", "space"],
            "repeats a value",
        ),
        (
            body(models, space={"kind": "repeat", "repeats": [2, 40]}),
            ["body", "space"],
            "repeats must be 2..16",
        ),
        (
            body(models, space={**INTERLEAVE, "first": "third"}),
            ["body", "space"],
            "first 'third' is not one of models",
        ),
    ]


def test_bad_models_and_scales_get_422_naming_the_field_and_store_nothing(database_url, models):
    with TestClient(create_app(settings(database_url, models["root"]), dispatch=False)) as c:
        for payload, loc, message in bad_cases(models):
            response = c.post("/api/sweeps", json=payload)
            assert response.status_code == 422, (payload, response.text)
            detail = response.json()["detail"]
            assert any(d["loc"][: len(loc)] == loc and message in d["msg"] for d in detail), (
                loc,
                message,
                detail,
            )
        assert count_rows(database_url) == (0, 0, 0)
        ok = c.post("/api/sweeps", json=body(models))  # control: the same body, well named
        assert ok.status_code == 201, ok.text


def test_a_source_model_changed_after_submission_fails_its_candidates_with_why(tmp_path, models):
    """The worker checks each model's files against the submission's fingerprints: the plans
    naming a source rewritten meanwhile fail and say why; the base model's own plan runs."""
    root = tmp_path / "models"
    base = tiny_model_dir(root / "base", layers=LAYERS)
    other = tiny_model_dir(root / "other", layers=LAYERS, seed=1)
    url = f"sqlite:///{tmp_path / 'changed.db'}"
    payload = {**body(models), "model": str(base), "models": {"other": str(other)}}
    payload["space"] = {"kind": "explicit", "plans": ["0-3,3-6@other"]}
    with TestClient(create_app(settings(url, str(root)), dispatch=False)) as client:
        sweep_id = client.post("/api/sweeps", json=payload).json()["id"]
    tiny_model_dir(other, layers=LAYERS, vocab_size=4096, seed=1)  # rewritten meanwhile
    with TestClient(create_app(settings(url, str(root)))) as client:
        assert wait_sweep(client, sweep_id)["status"] == "done"
        failed = [
            client.get(f"/api/candidates/{c['candidate_id']}").json()
            for c in client.get(f"/api/sweeps/{sweep_id}/leaderboard").json()["rows"]
        ]
    assert [c["status"] for c in failed] == ["failed"]
    assert failed[0]["error"].startswith(
        "loading source model other: its files changed after the sweep was submitted"
    )
