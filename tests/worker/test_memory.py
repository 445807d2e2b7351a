"""The memory planner's arithmetic against what real loads and generations allocate, on tiny
random models: weights as loaded (plain, nf4, int8, bf16), the KV cache of a view of any depth
after ``generate`` (every family, sliding layers included), the largest batch that fits."""

from __future__ import annotations

import pytest
import torch

from frankensweep.models import LoadOptions, read_config
from frankensweep.models.memory import (
    Generation,
    Windows,
    estimate,
    kv_cache_bytes,
    largest_batch,
    logits_bytes,
    weight_bytes,
)
from frankensweep.search import Plan
from frankensweep.testing.models import FAMILIES, storage_bytes, tiny_model, tiny_model_dir
from frankensweep.worker.loading import load_base_model
from frankensweep.worker.views import build_view

PLANS = ["0-8", "0-6,2-8", "0-8,0-8,4-8"]  # the base, a repeat, 2.5x the depth


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory.mktemp("tiny") / "llama", layers=4, vocab_size=512)


@pytest.mark.parametrize(
    ("quantization", "dtype"),
    [("none", "float32"), ("none", "bfloat16"), ("nf4", "float32"), ("int8", "float32")],
)
def test_weights_are_the_bytes_a_load_holds(tiny_dir, quantization, dtype):
    """Every storage of the loaded model (parameters, buffers, bitsandbytes states) summed."""
    base = load_base_model(
        str(tiny_dir), device="cpu", load=LoadOptions(quantization=quantization, dtype=dtype)
    )
    held = sum(storage_bytes(base.model).values())
    assert weight_bytes(read_config(str(tiny_dir)), quantization, dtype) == held


def test_quantized_weights_keep_embeddings_and_lm_head_in_the_dtype(tiny_dir):
    """A control: nf4 and int8 shrink only the decoder's Linear layers."""
    config = read_config(str(tiny_dir))
    embeddings = 2 * config.vocab_size * config.hidden_size * 4  # not tied: embed + lm_head
    plain = weight_bytes(config, "none", "float32")
    for quantization in ("nf4", "int8"):
        assert embeddings < weight_bytes(config, quantization, "float32") < plain


def _cache_bytes(cache) -> int:
    """Bytes of every storage the cache's keys and values hold (a view holds its whole
    storage: a sliding layer's window is a slice of the last concatenation)."""
    storages = {}
    for layer in cache.layers:
        for tensor in (layer.keys, layer.values):
            storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
    return sum(storages.values())


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("plan", PLANS)
@pytest.mark.parametrize(("prompt", "new"), [(4, 10), (20, 1)])
def test_kv_cache_is_what_generate_allocates(family, plan, prompt, new):
    """Batch 2, every new token forced: after the prefill alone (20, 1: sliding layers still
    hold the whole prompt) and after decoding past the window (4, 10)."""
    model = tiny_model(family)
    parsed = Plan.parse(plan)
    view = build_view(model, parsed)
    ids = torch.randint(3, model.config.vocab_size, (2, prompt), generator=torch.Generator())
    with torch.no_grad():
        out = view.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new,
            min_new_tokens=new,
            do_sample=False,
            return_dict_in_generate=True,
        )
    assert len(out.past_key_values.layers) == len(parsed)
    expected = kv_cache_bytes(model.config, parsed.layers(), 2, prompt, new, "float32")
    assert _cache_bytes(out.past_key_values) == expected


def test_the_kv_check_can_fail():
    """A control: a cache one position shallower (the base's slots for a deeper plan, the
    shared-slot trap) is not what the planner counts for the plan."""
    model = tiny_model("llama")
    deeper = Plan.parse("0-8,4-8")
    assert kv_cache_bytes(model.config, deeper.layers(), 2, 4, 10, "float32") != kv_cache_bytes(
        model.config, deeper.layers()[:-1], 2, 4, 10, "float32"
    )


def test_generation_logits_are_the_last_position_only():
    """``generate`` asks the model for the last position's logits (``logits_to_keep=1``)."""
    model = tiny_model("llama")
    ids = torch.randint(3, 256, (3, 12), generator=torch.Generator())
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=2,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
        )
    first = out.logits[0]
    assert first.shape == (3, model.config.vocab_size)
    workload = Generation(3, 12, 2)
    assert logits_bytes(model.config, workload, "float32") == 2 * first.nbytes


def test_largest_batch_is_the_largest_that_fits():
    config = tiny_model("llama").config
    layers = Plan.parse("0-8,0-8").layers()

    def total(batch: int) -> int:
        work = [Generation(batch, 300, 80)]
        return estimate(config, "none", "float32", layers, work).total

    limit = total(7) + (total(8) - total(7)) // 2
    assert largest_batch(config, "none", "float32", layers, 300, 80, limit) == 7
    assert largest_batch(config, "none", "float32", layers, 300, 80, total(1) - 1) == 0
    assert largest_batch(config, "none", "float32", layers, 300, 80, 1 << 50, cap=64) == 64


def test_the_peak_is_the_heaviest_workload_or_the_loading():
    config = tiny_model("llama").config
    layers = Plan.parse("0-8").layers()
    work = [Generation(1, 10, 5), Windows(1, 64, 1 << 30)]
    found = estimate(config, "none", "float32", layers, work)
    assert found.peak == "perplexity"  # 64 x vocab logits outweigh one generated row
    assert found.total == found.parts["weights"] + found.workloads["perplexity"]
    assert found.parts["kv_cache"] == 0 and found.parts["prefix_states"] > 0
    loading = estimate(config, "nf4", "float32", layers, work, gguf=True)
    assert loading.peak == "loading"
    assert loading.parts["loading"] == 2 * weight_bytes(config, "none", "float32")
    on_gpu = estimate(config, "nf4", "float32", layers, work, gguf=True, cuda=True)
    assert on_gpu.parts["loading"] == 0 and on_gpu.peak == "perplexity"
