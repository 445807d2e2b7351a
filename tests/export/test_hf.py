"""HF export of every supported family (tiny random models): the directory loads to the view.

Sliding-window families (Mistral, Qwen2, Gemma2, Gemma3) check that the per-layer config follows
its source layer: a plan moving layers across attention kinds would give other logits otherwise.
"""

from __future__ import annotations

import json

import torch
from transformers import AutoModelForCausalLM

from frankensweep.export import ExportRequest
from frankensweep.export.hf import WEIGHTS, view_tensors, write_view
from frankensweep.search import Plan
from frankensweep.worker.loading import BaseModel
from frankensweep.worker.views import build_view

PLAN = "0-5,2-8,7-8"  # 12 positions; layers 2-4 and 7 twice, moved to other indices
IDS = torch.arange(3, 19).reshape(1, 16)  # longer than the tiny sliding window


def test_the_directory_loads_to_the_view_s_logits_bit_for_bit(family_model, tmp_path):
    family, model = family_model
    base = BaseModel(
        spec=family, model=model, tokenizer=None, device=torch.device("cpu"), dtype=torch.float32
    )
    plan = Plan.parse(PLAN)
    written = write_view(base, ExportRequest(model=family, plan=plan), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["num_hidden_layers"] == 12
    if "layer_types" in config:
        assert config["layer_types"] == [model.config.layer_types[i] for i in plan.layers()]
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    view = build_view(model, plan)
    with torch.inference_mode():
        assert torch.equal(loaded(IDS).logits, view(IDS, use_cache=False).logits)
    assert written == (tmp_path / WEIGHTS).stat().st_size - _header_bytes(tmp_path / WEIGHTS)


def test_repeated_layers_are_written_per_position_and_ties_once(family_model):
    _, model = family_model
    tensors = view_tensors(build_view(model, Plan.parse(PLAN)))
    positions = {int(n.split(".")[2]) for n in tensors if n.startswith("model.layers.")}
    assert positions == set(range(12))
    q = "self_attn.q_proj.weight"
    assert tensors[f"model.layers.5.{q}"].data_ptr() == tensors[f"model.layers.2.{q}"].data_ptr()
    tied = model.config.tie_word_embeddings
    assert ("lm_head.weight" in tensors) is not tied


def _header_bytes(path) -> int:
    """The safetensors header: its 8-byte length and the JSON it announces."""
    with path.open("rb") as f:
        return 8 + int.from_bytes(f.read(8), "little")
