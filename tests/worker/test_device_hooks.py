"""Views under accelerate's device hooks: every position runs its own copy, where its source
layer lives, with its own KV-cache slot.

CPU with disk offload installs the same hooks as a model spread over GPUs (``dispatch_model``:
an ``AlignDevicesHook`` on every block and on the whole model), so these run in CI: through the
product's own path (``device_map: auto`` with a CPU cap, on a small random Llama) and on the real
SmolLM2 dispatched by accelerate with some layers on disk.
"""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from accelerate import dispatch_model
from accelerate.hooks import AlignDevicesHook, add_hook_to_module

from frankensweep.evals.perplexity import perplexity
from frankensweep.models import LoadOptions
from frankensweep.search import Plan
from frankensweep.testing.models import (
    cached_and_recomputed,
    materialize,
    tiny_model,
    tiny_model_dir,
)
from frankensweep.worker.hooks import has_device_hooks
from frankensweep.worker.loading import load_base_model
from frankensweep.worker.prefix_views import shared_view_perplexities
from frankensweep.worker.views import build_view, decoder_stack

PLANS = ["0-4,1-6", "0-6,2-6", "0-3,2-5,3-6"]
GENERATE = dict(max_new_tokens=40, min_new_tokens=40, do_sample=False)
# with this cap on CPU memory, device_map auto puts layers 0-2 in memory and 3-5 on disk
CPU_CAP = "800KB"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory.mktemp("tiny") / "llama", layers=6, vocab_size=512)


@pytest.fixture(scope="module")
def plain(model_dir):
    return load_base_model(str(model_dir), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def offloaded(model_dir):
    """The same model loaded as a sweep with ``device_map: auto`` and a CPU cap loads it."""
    options = LoadOptions(device_map="auto", max_memory={"cpu": CPU_CAP}, dtype="float32")
    return load_base_model(str(model_dir), device="cpu", load=options)


def _ids(seq_len: int = 12) -> torch.Tensor:
    return torch.randint(3, 256, (1, seq_len), generator=torch.Generator().manual_seed(3))


def test_auto_device_map_offloads_to_disk_and_installs_hooks(offloaded):
    placed = offloaded.model.hf_device_map
    assert placed["model.layers.0"] == "cpu" and placed["model.layers.5"] == "disk"
    assert all(
        getattr(layer, "_hf_hook", None) is not None for layer in decoder_stack(offloaded.model)[1]
    )
    assert offloaded.model.model.layers[5].mlp.up_proj.weight.is_meta  # weights on disk
    assert offloaded.device == torch.device("cpu")


def test_each_position_runs_its_own_copy_with_its_source_layers_hook(offloaded):
    base_layers = decoder_stack(offloaded.model)[1]
    plan = Plan.parse("0-4,1-6")
    view = build_view(offloaded.model, plan)
    for position, (layer, source) in enumerate(
        zip(decoder_stack(view)[1], plan.layers(), strict=True)
    ):
        original = base_layers[source]
        assert layer is not original
        assert layer._hf_hook is original._hf_hook  # same execution device, same offload
        assert isinstance(layer.forward, functools.partial)
        assert layer.forward.args[0] is layer  # the hook calls the copy...
        assert layer._old_forward.__self__ is layer  # ...whose own forward runs
        assert layer.self_attn.layer_idx == position
    assert view.forward.args[0] is view  # the whole model's io hook runs the view too
    for index, layer in enumerate(base_layers):  # the base model is untouched
        assert layer.forward.args[0] is layer and layer.self_attn.layer_idx == index


@pytest.mark.parametrize("plan_text", PLANS)
def test_view_logits_equal_materialized_copy_bitwise(offloaded, plain, plan_text):
    plan = Plan.parse(plan_text)
    ids = _ids()
    with torch.inference_mode():
        got = build_view(offloaded.model, plan)(input_ids=ids, use_cache=False).logits
        want = materialize(plain.model, plan.layers())(input_ids=ids, use_cache=False).logits
    assert torch.equal(got, want), f"max diff {(got - want).abs().max()}"


def test_cached_generation_of_40_tokens_equals_recompute(offloaded):
    view = build_view(offloaded.model, Plan.parse("0-4,1-6"))
    assert torch.equal(*cached_and_recomputed(view, _ids(8)))


def test_prefix_shared_perplexity_equals_separate_evaluation(offloaded):
    plans = [Plan.parse(p) for p in PLANS]
    windows = torch.randint(3, 256, (3, 16), generator=torch.Generator().manual_seed(5))
    shared, stats = shared_view_perplexities(offloaded.model, plans, windows)
    assert stats.layer_evals < stats.separate_layer_evals
    for plan in plans:
        assert shared[plan].nll == perplexity(build_view(offloaded.model, plan), windows).nll


def test_base_model_unchanged_after_views(offloaded):
    ids = _ids()
    with torch.inference_mode():
        before = offloaded.model(input_ids=ids, use_cache=False).logits
        for plan in PLANS * 5:
            build_view(offloaded.model, Plan.parse(plan))(input_ids=ids[:, :4], use_cache=False)
        after = offloaded.model(input_ids=ids, use_cache=False).logits
    assert torch.equal(before, after)
    assert offloaded.model.config.num_hidden_layers == 6


# -- the trap, shown: views without re-bound hooks --------------------------------------------


def _without_rebinding(monkeypatch):
    monkeypatch.setattr("frankensweep.worker.views.rebind_hooks", lambda clone, module: None)


def test_control_hooked_layers_without_rebinding_break_cached_generation(monkeypatch):
    """Control for the checks above (DESIGN.md's observation): with a device hook on every
    decoder layer and the fix disabled, no-cache logits stay right but cached generation
    differs from the recompute, as every copy runs its source layer and its KV slot."""
    base = tiny_model("llama")
    plan = Plan.parse("0-6,2-8")
    ids = _ids(8)
    with torch.inference_mode():
        want = materialize(base, plan.layers())(input_ids=ids, use_cache=False).logits
    for layer in decoder_stack(base)[1]:
        add_hook_to_module(layer, AlignDevicesHook(execution_device="cpu"))
    assert has_device_hooks(base)
    _without_rebinding(monkeypatch)
    naive = build_view(base, plan)
    with torch.inference_mode():
        assert torch.equal(naive(input_ids=ids, use_cache=False).logits, want)
    cached, recomputed = cached_and_recomputed(naive, ids)
    assert not torch.equal(cached, recomputed)
    monkeypatch.undo()
    with torch.inference_mode():
        fixed = build_view(base, plan).generate(ids, use_cache=True, **GENERATE)
    assert torch.equal(fixed, recomputed)


def test_control_dispatched_model_without_rebinding_runs_the_base(offloaded, monkeypatch):
    """Control: under ``dispatch_model`` (a hook on the whole model too) a view whose hooks
    are not re-bound silently computes the base model's logits, not its plan's."""
    plan = Plan.parse("0-4,1-6")
    ids = _ids()
    _without_rebinding(monkeypatch)
    with torch.inference_mode():
        got = build_view(offloaded.model, plan)(input_ids=ids, use_cache=False).logits
        base = offloaded.model(input_ids=ids, use_cache=False).logits
    assert torch.equal(got, base)


# -- the real model -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2_offloaded(smollm2, tmp_path_factory):
    """A copy of SmolLM2 dispatched by accelerate with layers 12 and 14 on disk, the rest in
    CPU memory: the hooks a multi-GPU dispatch installs."""
    model = copy.deepcopy(smollm2.model)
    device_map = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.norm": "cpu"}
    device_map |= {f"model.layers.{i}": "disk" if i in (12, 14) else "cpu" for i in range(30)}
    device_map["lm_head"] = "cpu"
    return dispatch_model(
        model, device_map=device_map, offload_dir=str(tmp_path_factory.mktemp("offload"))
    )


@pytest.mark.slow
def test_smollm2_under_hooks_view_equals_materialized_and_cache_is_exact(
    smollm2, smollm2_offloaded
):
    assert smollm2_offloaded.model.layers[12].mlp.up_proj.weight.is_meta
    plan = Plan.parse("0-20,10-30")
    ids = smollm2.tokenizer("The three primary colours are red, yellow and", return_tensors="pt")
    ids = ids.input_ids
    view = build_view(smollm2_offloaded, plan)
    with torch.inference_mode():
        got = view(input_ids=ids, use_cache=False).logits
        want = materialize(smollm2.model, plan.layers())(input_ids=ids, use_cache=False).logits
    assert torch.equal(got, want)
    assert torch.equal(*cached_and_recomputed(view, ids))


@pytest.mark.slow
def test_smollm2_under_hooks_prefix_sharing_is_exact(smollm2, smollm2_offloaded):
    plans = [Plan.parse(p) for p in ("0-20,10-30", "0-20,12-30", "0-16,8-30")]
    ids = smollm2.tokenizer("Red, yellow and blue. " * 20, return_tensors="pt").input_ids
    windows = ids[0, :64].reshape(2, 32)
    shared, _ = shared_view_perplexities(smollm2_offloaded, plans, windows)
    for plan in plans:
        separate = perplexity(build_view(smollm2_offloaded, plan), windows)
        assert shared[plan].nll == separate.nll, plan
