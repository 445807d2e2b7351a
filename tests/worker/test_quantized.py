"""Views over SmolLM2 loaded in nf4 and in int8 (bitsandbytes, on CPU): exact and copy-free.

The reference of a view is the plan materialized from the float model, then quantized with the
same settings (what a user gets by merging with mergekit and loading the result quantized):
quantizing a weight depends on that weight alone, so the logits must agree bit for bit.
bitsandbytes on CPU is slow: short prompts, and a plan of 11 positions repeating three layers.
"""

from __future__ import annotations

import pytest
import torch

from frankensweep.evals.perplexity import perplexity
from frankensweep.models import LoadOptions, smollm2_path
from frankensweep.search import Plan
from frankensweep.testing.models import (
    cached_and_recomputed,
    materialize,
    storage_bytes,
    tensors_of,
)
from frankensweep.worker.loading import load_base_model, quantization_config, quantized_copy
from frankensweep.worker.prefix_views import shared_view_perplexities
from frankensweep.worker.views import build_view, decoder_stack

pytestmark = pytest.mark.slow

PROMPT = "The three primary colours are red, yellow and"
PLAN = Plan.parse("0-6,3-8")  # layers 3, 4, 5 run twice
LINEAR = {"nf4": "Linear4bit", "int8": "Linear8bitLt"}


@pytest.fixture(scope="module", params=["nf4", "int8"])
def quantized(request):
    return load_base_model(
        str(smollm2_path()), device="cpu", load=LoadOptions(quantization=request.param)
    )


def _storages(model) -> set[int]:
    """Storage addresses of every tensor of ``model`` (``storage_bytes``)."""
    return set(storage_bytes(model))


def test_quantized_layers_are_bitsandbytes_modules(quantized):
    quantization = quantized.load.quantization
    layer = decoder_stack(quantized.model)[1][0]
    assert type(layer.self_attn.q_proj).__name__ == LINEAR[quantization]
    assert type(layer.mlp.down_proj).__name__ == LINEAR[quantization]
    assert quantized.model.config.quantization_config.quant_method == "bitsandbytes"
    assert quantized.num_layers == 30


def test_views_share_quantized_modules_and_states(quantized):
    base = quantized.model
    ids = quantized.tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.inference_mode():  # bitsandbytes repacks CPU weights in place on first use
        base(input_ids=ids, use_cache=False)
    before = _storages(base)
    view = build_view(base, PLAN)
    for layer, source in zip(decoder_stack(view)[1], PLAN.layers(), strict=True):
        original = decoder_stack(base)[1][source]
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            assert getattr(layer.self_attn, name) is getattr(original.self_attn, name)
        for name in ("gate_proj", "up_proj", "down_proj"):
            assert getattr(layer.mlp, name) is getattr(original.mlp, name)
    assert _storages(view) <= before  # no storage outside the base
    module = decoder_stack(base)[1][3].mlp.up_proj  # nf4: quant_state; int8: SCB, in .state
    held = (module.weight, getattr(module, "state", None))
    states = [t for v in held for t in tensors_of(v) if t is not module.weight and t.numel()]
    assert states, "the quantization state holds tensors (absmax, SCB, ...)"
    assert {t.untyped_storage().data_ptr() for t in states} <= _storages(view)
    weights = {p.untyped_storage().data_ptr() for p in base.parameters()}
    with torch.inference_mode():
        view(input_ids=ids, use_cache=False)
    # int8 keeps per-call matmul state (outlier indices) on its modules: those of the base,
    # which the view runs; the quantized weights themselves stay as they were
    assert _storages(view) <= _storages(base)
    assert {p.untyped_storage().data_ptr() for p in base.parameters()} == weights


def test_view_logits_equal_the_quantized_materialized_copy(quantized, smollm2):
    options = quantized.load
    reference = quantized_copy(
        materialize(smollm2.model, PLAN.layers()),
        quantization_config(options, torch.float32),
        dtype=torch.float32,
        device_map={"": "cpu"},
    )
    ids = quantized.tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.inference_mode():
        got = build_view(quantized.model, PLAN)(input_ids=ids, use_cache=False).logits
        want = reference(input_ids=ids, use_cache=False).logits
    assert torch.equal(got, want), f"max diff {(got - want).abs().max()}"


def test_cached_generation_of_40_tokens_equals_recompute(quantized):
    ids = quantized.tokenizer(PROMPT, return_tensors="pt").input_ids
    assert torch.equal(*cached_and_recomputed(build_view(quantized.model, PLAN), ids))


def test_prefix_shared_perplexity_equals_separate_evaluation(quantized):
    plans = [PLAN, Plan.parse("0-6,4-8"), Plan.parse("0-5,2-8")]
    ids = quantized.tokenizer(PROMPT + " blue, green." * 12, return_tensors="pt").input_ids
    windows = ids[0, :32].reshape(2, 16)
    shared, stats = shared_view_perplexities(quantized.model, plans, windows)
    assert stats.layer_evals < stats.separate_layer_evals  # the prefix 0-5 ran once per batch
    for plan in plans:
        separate = perplexity(build_view(quantized.model, plan), windows)
        assert shared[plan].nll == separate.nll, plan
