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
