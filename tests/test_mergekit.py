"""End to end: a view equals the model mergekit writes for the same recipe, bit for bit.

Through the real command lines: ``frankensweep convert`` (SmolLM2 GGUF -> Hugging Face fp32
directory), ``frankensweep export`` (the plan's recipe), ``mergekit-yaml`` (the merged model on
disk). The merged model is then loaded with transformers and compared to ``build_view`` of the
same plan on the converted base model. Needs mergekit in the venv (a dev extra).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

from frankensweep.export.mergekit import mergekit_command
from frankensweep.search import Plan
from frankensweep.worker.views import build_view, decoder_stack

pytestmark = pytest.mark.slow

PLAN = "0-16,8-24,16-30"  # 46 positions
OTHER_PLANS = (
    "0-16,9-24,16-30",  # one layer fewer in the middle slice
    "0-16,9-25,16-30",  # same depth (46), middle slice shifted by one layer
)
PROMPT = "The three primary colours are red, yellow and"
BIN = Path(sys.executable).parent


def _exe(name: str) -> str:
    found = shutil.which(name, path=str(BIN))
    assert found, f"{name} not found next to {sys.executable}: mergekit is a dev extra"
    return found


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "COLUMNS": "200"}
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stderr[-4000:]}"
    return proc


@dataclass
class Pipeline:
    base_dir: Path
    recipe_text: str
    merged_dir: Path


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Iterator[Pipeline]:
    """convert -> export -> mergekit-yaml, each as a real process; removed afterwards."""
    from frankensweep.models import smollm2_path

    _exe("mergekit-yaml")  # fail before the slow steps if mergekit is missing
    frankensweep = _exe("frankensweep")
    root = tmp_path_factory.mktemp("mergekit")
    base_dir, recipe, merged_dir = root / "base", root / "recipe.yml", root / "merged"

    _run(frankensweep, "convert", "--model", str(smollm2_path()), "--out", str(base_dir))
    exported = _run(
        frankensweep, "export", "--model", str(base_dir), "--plan", PLAN, "--dtype", "float32"
    )
    recipe.write_text(exported.stdout)
    _run(*mergekit_command(recipe, merged_dir))
    yield Pipeline(base_dir=base_dir, recipe_text=exported.stdout, merged_dir=merged_dir)
    shutil.rmtree(root, ignore_errors=True)  # 1.3 GB of fp32 weights; pytest keeps 3 runs


@pytest.fixture(scope="module")
def base(pipeline):
    """The converted directory loaded as frankensweep loads any base model (fp32, CPU)."""
    from frankensweep.worker.loading import load_base_model

    return load_base_model(str(pipeline.base_dir), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def merged(pipeline):
    """mergekit's output loaded with plain transformers (fp32)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(pipeline.merged_dir, dtype=torch.float32)
    return model.eval()


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=ids, use_cache=False).logits


@pytest.fixture(scope="module")
def prompt_ids(base) -> torch.Tensor:
    return base.tokenizer(PROMPT, return_tensors="pt").input_ids


@pytest.fixture(scope="module")
def merged_logits(merged, prompt_ids) -> torch.Tensor:
    return _logits(merged, prompt_ids)


def test_exported_recipe_is_the_plan_on_the_converted_directory(pipeline):
    recipe = yaml.safe_load(pipeline.recipe_text)
    assert recipe["merge_method"] == "passthrough"
    assert recipe["dtype"] == "float32"
    sources = [s["sources"] for s in recipe["slices"]]
    assert all(len(s) == 1 and s[0]["model"] == str(pipeline.base_dir) for s in sources)
    ranges = [tuple(s[0]["layer_range"]) for s in sources]
    assert ranges == [(s.start, s.end) for s in Plan.parse(PLAN).slices]


def test_mergekit_writes_46_layers_in_float32(pipeline, merged):
    config = json.loads((pipeline.merged_dir / "config.json").read_text())
    assert config["num_hidden_layers"] == 46
    assert len(decoder_stack(merged)[1]) == 46
    assert merged.dtype == torch.float32
    assert (pipeline.merged_dir / "tokenizer.json").is_file()


def test_mergekit_layers_are_the_plan_source_layers(base, merged):
    plan = Plan.parse(PLAN).validate(base.num_layers)
    _, base_layers = decoder_stack(base.model)
    _, merged_layers = decoder_stack(merged)
    for position, source in enumerate(plan.layers()):
        want = base_layers[source].state_dict()
        got = merged_layers[position].state_dict()
        assert got.keys() == want.keys()
        for name, tensor in want.items():
            assert torch.equal(got[name], tensor), f"position {position} {name} != layer {source}"


def test_view_logits_equal_mergekit_logits_bitwise(base, prompt_ids, merged_logits):
    plan = Plan.parse(PLAN).validate(base.num_layers)
    view = build_view(base.model, plan)
    assert len(decoder_stack(view)[1]) == 46
    got = _logits(view, prompt_ids)
    assert got.dtype == merged_logits.dtype == torch.float32
    assert torch.equal(got, merged_logits), (got - merged_logits).abs().max()


@pytest.mark.parametrize("other", OTHER_PLANS)
def test_view_of_another_plan_differs_from_mergekit(base, prompt_ids, merged_logits, other):
    view = build_view(base.model, Plan.parse(other).validate(base.num_layers))
    got = _logits(view, prompt_ids)
    assert got.shape == merged_logits.shape
    assert not torch.equal(got, merged_logits)
    assert (got - merged_logits).abs().max() > 1e-2  # not a rounding difference


# -- the repeat, interleave and scaled kinds: tiny saved models, then SmolLM2 with a sibling -----

TINY_PLANS = {
    # plan: whether mergekit's merge equals the view bit for bit (else within 1e-5 relative)
    "0-2,1-3@other,2-4,3-5@other,4-6": True,  # interleave, first and last from the base model
    "0-2@other,1-3,2-4@other,3-5,4-6@other": True,  # first and last from the other model
    "0-3,1-3,1-5,4-5,4-6": True,  # two blocks, run 3 and 2 times
    "0-4,2-4*0.5,4-6": True,  # a scaled repeat: 0.5 is exact
    "0-4,2-4*0.75,2-4*0.75,4-6": False,  # another scale: rounding
    "0-3,1-4@other*0.5,3-6": True,  # a scaled slice of the other model
}


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory) -> tuple[Path, Path]:
    """Two saved tiny Llamas of one config (6 layers), other weights."""
    from frankensweep.testing.models import tiny_model_dir

    root = tmp_path_factory.mktemp("tiny-pair")
    return tiny_model_dir(root / "base", seed=0), tiny_model_dir(root / "other", seed=1)


def _merge(plan: str, base: Path, other: Path, root: Path) -> tuple[dict, Path]:
    """``frankensweep export`` of the plan with ``--source other=...``, then mergekit-yaml."""
    exported = _run(
        _exe("frankensweep"),
        "export",
        "--model",
        str(base),
        "--plan",
        plan,
        "--source",
        f"other={other}",
        "--dtype",
        "float32",
    )
    root.mkdir(parents=True)
    recipe = root / "recipe.yml"
    recipe.write_text(exported.stdout)
    _run(*mergekit_command(recipe, root / "merged"))
    return yaml.safe_load(exported.stdout), root / "merged"


def _loaded(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


@pytest.mark.parametrize("plan", list(TINY_PLANS))
def test_view_of_two_models_and_scales_equals_mergekits_merge(tiny_pair, tmp_path, plan):
    base_dir, other_dir = tiny_pair
    recipe, merged_dir = _merge(plan, base_dir, other_dir, tmp_path / "merge")
    base, other = _loaded(base_dir), _loaded(other_dir)
    parsed = Plan.parse(plan)
    view = build_view(base, parsed, {"other": other})
    merged = _loaded(merged_dir)
    assert len(decoder_stack(merged)[1]) == len(parsed)
    ids = torch.randint(0, 257, (2, 24), generator=torch.Generator().manual_seed(0))
    got, want = _logits(view, ids), _logits(merged, ids)
    if TINY_PLANS[plan]:
        assert torch.equal(got, want), (got - want).abs().max()
    else:
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-6), (got - want).abs().max()
        assert not torch.equal(_logits(build_view(base, parsed.without_scales()), ids), want)
    ends = [recipe["slices"][0]["sources"][0], recipe["slices"][-1]["sources"][0]]
    assert all(s["model"] == str(base_dir) for s in ends)  # embeddings and head: the base's


def test_control_mergekit_takes_the_head_from_the_last_slices_model(tiny_pair, tmp_path):
    """Why the recipe ends with the base model: without the empty slice, mergekit's LM head and
    final norm come from the other model and the logits differ from the view's."""
    base_dir, other_dir = tiny_pair
    plan = "0-3,3-6@other"
    recipe, _ = _merge(plan, base_dir, other_dir, tmp_path / "with")
    assert recipe["slices"][-1]["sources"][0] == {"model": str(base_dir), "layer_range": [0, 0]}
    recipe["slices"].pop()  # no empty base slice at the end
    (tmp_path / "without").mkdir()
    path = tmp_path / "without" / "recipe.yml"
    path.write_text(yaml.safe_dump(recipe))
    _run(*mergekit_command(path, tmp_path / "without" / "merged"))
    base, other = _loaded(base_dir), _loaded(other_dir)
    merged = _loaded(tmp_path / "without" / "merged")
    assert torch.equal(merged.model.norm.weight, other.model.norm.weight)
    ids = torch.randint(0, 257, (1, 16), generator=torch.Generator().manual_seed(0))
    view = build_view(base, Plan.parse(plan), {"other": other})
    assert not torch.equal(_logits(view, ids), _logits(merged, ids))


@pytest.fixture(scope="module")
def sibling(pipeline) -> Iterator[Path]:
    """SmolLM2 with every weight perturbed (1% of each tensor's spread), saved next to it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(pipeline.base_dir, dtype=torch.float32)
    torch.manual_seed(11)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * (0.01 * p.std()))
    path = pipeline.base_dir.parent / "sibling"
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(pipeline.base_dir).save_pretrained(path)
    yield path
    shutil.rmtree(path, ignore_errors=True)


# both ends from the sibling: the recipe needs the base model's empty slices at both ends
SIBLING_PLAN = "0-10@other,5-15,10-20@other,15-25,20-30@other"


def test_smollm2_interleave_with_its_sibling_equals_mergekits_merge(
    pipeline, base, sibling, tmp_path
):
    from frankensweep.search import InterleaveSpace
    from frankensweep.worker.loading import load_base_model

    space = InterleaveSpace(30, ("base", "other"), 10, 5, ("other",))
    assert str(space.plan_for(10, 5, "other")) == SIBLING_PLAN
    recipe, merged_dir = _merge(SIBLING_PLAN, pipeline.base_dir, sibling, tmp_path / "pair")
    assert [s["sources"][0]["layer_range"] for s in recipe["slices"]][::6] == [[0, 0], [0, 0]]
    merged = _loaded(merged_dir)
    other = load_base_model(str(sibling), device="cpu", dtype="float32")
    ids = base.tokenizer(PROMPT, return_tensors="pt").input_ids
    view = build_view(base.model, Plan.parse(SIBLING_PLAN), {"other": other.model})
    got, want = _logits(view, ids), _logits(merged, ids)
    assert torch.equal(got, want), (got - want).abs().max()
    alone = build_view(base.model, Plan.parse(SIBLING_PLAN), {"other": base.model})
    assert not torch.equal(_logits(alone, ids), want)  # control: the sibling's layers matter


def test_smollm2_with_its_sibling_evaluates_through_the_service(pipeline, base, sibling, tmp_path):
    from fastapi.testclient import TestClient

    from frankensweep.api.app import create_app
    from frankensweep.core.config import Settings
    from frankensweep.evals.corpus import bundled_text
    from frankensweep.evals.perplexity import make_windows, perplexity, tokenize_corpus
    from frankensweep.testing.sweeps import wait_sweep
    from frankensweep.worker.loading import load_base_model

    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'pair.db'}",
        path_roots=str(pipeline.base_dir.parent),
        device="cpu",
        dtype="float32",
    )
    ppl = {"kind": "perplexity", "corpus": "pydoc_data.topics", "tokens": 128, "ctx": 64}
    body = {
        "name": "smollm2 and its sibling",
        "model": str(pipeline.base_dir),
        "models": {"other": str(sibling)},
        "space": {
            "kind": "interleave",
            "models": ["base", "other"],
            "slice_size": 10,
            "overlap": 5,
            "first": ["base", "other"],
        },
        "evals": [ppl],
    }
    with TestClient(create_app(settings)) as client:
        created = client.post("/api/sweeps", json=body)
        assert created.status_code == 201, created.text
        assert wait_sweep(client, created.json()["id"])["status"] == "done"
        board = client.get(f"/api/sweeps/{created.json()['id']}/leaderboard").json()
    got = {r["plan"]: r["scores"]["perplexity"] for r in board["rows"]}
    assert set(got) == {SIBLING_PLAN, "0-10,5-15@other,10-20,15-25@other,20-30"}
    other = load_base_model(str(sibling), device="cpu", dtype="float32")
    windows = make_windows(tokenize_corpus(base.tokenizer, bundled_text()), 128, 64)
    for plan, value in got.items():
        view = build_view(base.model, Plan.parse(plan), {"other": other.model})
        assert value == perplexity(view, windows).perplexity, plan
