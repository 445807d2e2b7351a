"""Load options on CUDA (skipped without a GPU): GGUF straight to the GPU in bfloat16, nf4 on
the GPU, and ``device_map: auto`` across GPUs (or one GPU and CPU memory), where every view
position must run on its source layer's device with its own KV-cache slot."""

from __future__ import annotations

import pytest
import torch

from frankensweep.models import LoadOptions, smollm2_path
from frankensweep.search import Plan
from frankensweep.testing.models import cached_and_recomputed
from frankensweep.worker.loading import load_base_model
from frankensweep.worker.views import build_view, decoder_stack

pytestmark = [
    pytest.mark.slow,
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

PROMPT = "The three primary colours are red, yellow and"


def _cached_equals_recompute(base, plan: Plan) -> None:
    ids = base.tokenizer(PROMPT, return_tensors="pt").input_ids.to(base.device)
    assert torch.equal(*cached_and_recomputed(build_view(base.model, plan), ids))


def _positions_run_on_their_source_devices(base, plan: Plan) -> None:
    """Each position's output is on the device its source layer was placed on."""
    placed = base.model.hf_device_map
    seen: dict[int, torch.device] = {}
    view = build_view(base.model, plan)
    for position, layer in enumerate(decoder_stack(view)[1]):
        layer.register_forward_hook(
            lambda _m, _a, out, p=position: seen.setdefault(
                p, (out[0] if isinstance(out, tuple) else out).device
            )
        )
    ids = base.tokenizer(PROMPT, return_tensors="pt").input_ids.to(base.device)
    with torch.inference_mode():
        view(input_ids=ids, use_cache=False)
    for position, source in enumerate(plan.layers()):
        where = placed.get(f"model.layers.{source}", placed.get("model.layers", 0))
        want = torch.device("cuda", where) if isinstance(where, int) else torch.device(where)
        if want.type in ("cpu", "disk", "meta"):  # offloaded: computed on the GPU
            assert seen[position].type == "cuda"
        else:
            assert seen[position] == want, (position, source)


def test_gguf_loads_straight_to_cuda_in_bfloat16():
    base = load_base_model(str(smollm2_path()), device="cuda")
    assert base.dtype == torch.bfloat16
    assert {p.device.type for p in base.model.parameters()} == {"cuda"}
    assert {p.dtype for p in base.model.parameters()} == {torch.bfloat16}
    _cached_equals_recompute(base, Plan.parse("0-20,10-30"))


def test_nf4_on_cuda():
    base = load_base_model(str(smollm2_path()), device="cuda", load=LoadOptions(quantization="nf4"))
    layer = decoder_stack(base.model)[1][0]
    assert type(layer.mlp.up_proj).__name__ == "Linear4bit"
    assert layer.mlp.up_proj.weight.device.type == "cuda"
    _cached_equals_recompute(base, Plan.parse("0-20,10-30"))


def test_device_map_auto_spreads_layers_and_views_follow_them():
    gpus = torch.cuda.device_count()
    # several GPUs: the first holds a few layers, the rest go to the others; one GPU: the rest
    # go to CPU memory (offloaded, computed on the GPU)
    caps = {"0": "120MiB", **({str(g): "8GiB" for g in range(1, gpus)} if gpus > 1 else {})}
    caps["cpu"] = "8GiB"
    options = LoadOptions(device_map="auto", max_memory=caps)
    base = load_base_model(str(smollm2_path()), load=options)
    assert len(set(base.model.hf_device_map.values())) > 1
    assert base.dtype == torch.bfloat16
    plan = Plan.parse("0-20,10-30")
    _positions_run_on_their_source_devices(base, plan)
    _cached_equals_recompute(base, plan)
