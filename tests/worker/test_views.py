"""Views behave exactly like the materialized model and leave the base model untouched."""

from __future__ import annotations

import pytest
import torch

from frankensweep.models import ModelLoadError
from frankensweep.search import Plan
from frankensweep.testing.models import TINY_LAYERS, greedy, materialize, random_ids, tiny_model
from frankensweep.worker.loading import check_supported
from frankensweep.worker.views import build_view, decoder_stack

PLANS = ["0-5,3-8", "0-8,2-6", "0-3,1-4,2-8,6-8", "0-8,0-8"]


_ids = random_ids


def _snapshot(model):
    """What must never change in the base model: layer_idx values, config, hook counts."""
    _, layers = decoder_stack(model)
    idx = [(name, m.layer_idx) for name, m in model.named_modules() if hasattr(m, "layer_idx")]
    hooks = sum(
        len(getattr(m, attr))
        for m in model.modules()
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_forward_hooks_with_kwargs")
    )
    return idx, model.config.to_dict(), hooks, len(layers)


@pytest.mark.parametrize("plan_text", PLANS)
def test_view_logits_equal_materialized_copy_bitwise(family_model, plan_text):
    family, base = family_model
    plan = Plan.parse(plan_text).validate(TINY_LAYERS)
    view = build_view(base, plan)
    reference = materialize(base, plan.layers())
    ids = _ids()
    with torch.inference_mode():
        got = view(input_ids=ids, use_cache=False).logits
        want = reference(input_ids=ids, use_cache=False).logits
    assert torch.equal(got, want), f"{family} {plan_text}: max diff {(got - want).abs().max()}"


def test_cached_greedy_generation_equals_recompute(family_model):
    family, base = family_model
    view = build_view(base, Plan.parse("0-6,2-8"))
    ids = _ids(seq_len=8)[:1]
    cached, recomputed = greedy(view, ids), greedy(view, ids, cache=False)
    assert cached.shape[1] == ids.shape[1] + 40
    assert torch.equal(cached, recomputed), family


def test_view_parameters_all_live_in_the_base_model(family_model):
    _, base = family_model
    base_ptrs = {p.data_ptr() for p in base.parameters()} | {b.data_ptr() for b in base.buffers()}
    view = build_view(base, Plan.parse("0-8,1-7,3-8"))
    assert {p.data_ptr() for p in view.parameters()} <= base_ptrs
    assert {b.data_ptr() for b in view.buffers()} <= base_ptrs
    assert len(decoder_stack(view)[1]) == 8 + 6 + 5


def test_base_model_unchanged_after_50_views(family_model):
    family, base = family_model
    ids = _ids()
    with torch.inference_mode():
        # transformers installs its output-capturing hooks lazily, on the first call that asks
        logits_before = base(input_ids=ids, output_hidden_states=True).logits
    before = _snapshot(base)
    with torch.inference_mode():
        for k in range(50):
            view = build_view(base, Plan.parse(PLANS[k % len(PLANS)]))
            out = view(input_ids=ids[:, :6], output_hidden_states=True, output_attentions=False)
            assert len(out.hidden_states) == len(decoder_stack(view)[1]) + 1
        out = base(input_ids=ids, output_hidden_states=True)
    assert _snapshot(base) == before
    assert len(out.hidden_states) == TINY_LAYERS + 1, family
    assert torch.equal(out.logits, logits_before)


def test_each_position_has_its_own_layer_idx(family_model):
    _, base = family_model
    view = build_view(base, Plan.parse("0-4,2-6,4-8"))
    for position, layer in enumerate(decoder_stack(view)[1]):
        assert layer.self_attn.layer_idx == position
        if hasattr(layer, "layer_idx"):
            assert layer.layer_idx == position
    assert view.config.num_hidden_layers == 12
    assert base.config.num_hidden_layers == TINY_LAYERS


@pytest.mark.parametrize("family", ["qwen2", "gemma2", "gemma3"])
def test_layer_types_follow_their_source_layers(family):
    base = tiny_model(family)
    plan = Plan.parse("0-3,1-8,5-8")
    view = build_view(base, plan)
    expected = [base.config.layer_types[i] for i in plan.layers()]
    assert view.config.layer_types == expected
    assert view.model.config.layer_types == expected
    for layer, source in zip(decoder_stack(view)[1], plan.layers(), strict=True):
        want = base.config.layer_types[source] == "sliding_attention"
        assert (layer.self_attn.sliding_window is not None) == want
    # the cache built by generate gets one slot per position, sliding where the source is
    with torch.inference_mode():
        out = view.generate(_ids(seq_len=10)[:1], max_new_tokens=4, return_dict_in_generate=True)
    assert len(out.past_key_values.layers) == len(plan)


def test_multi_model_plan_takes_layers_from_the_named_model():
    base, other = tiny_model("llama", seed=0), tiny_model("llama", seed=7)
    view = build_view(base, Plan.parse("0-4,4-8@other"), sources={"other": other})
    layers = decoder_stack(view)[1]
    assert (
        layers[5].mlp.up_proj.weight.data_ptr()
        == other.model.layers[5].mlp.up_proj.weight.data_ptr()
    )
    assert (
        layers[1].mlp.up_proj.weight.data_ptr()
        == base.model.layers[1].mlp.up_proj.weight.data_ptr()
    )


def test_unsupported_architecture_is_named():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=64))
    with pytest.raises(ModelLoadError, match=r"'gpt2'.*not supported"):
        check_supported(model)


def test_reusing_one_layer_object_breaks_cached_generation():
    """Control: the trap the per-position copies avoid is real, so the check above can fail."""
    import copy

    from torch import nn

    base = tiny_model("llama")
    plan = Plan.parse("0-6,2-8")
    naive = copy.copy(base)
    naive.config = copy.deepcopy(base.config)
    naive.config.num_hidden_layers = len(plan)
    inner = copy.copy(base.model)
    inner._modules = dict(base.model._modules)
    inner.config = naive.config
    inner._modules["layers"] = nn.ModuleList([base.model.layers[i] for i in plan.layers()])
    naive._modules = dict(base._modules)
    naive._modules["model"] = inner
    ids = _ids(seq_len=8)[:1]
    with torch.inference_mode():
        cached = naive.generate(ids, max_new_tokens=40, min_new_tokens=40, do_sample=False)
        recomputed = naive.generate(
            ids, max_new_tokens=40, min_new_tokens=40, do_sample=False, use_cache=False
        )
        right = build_view(base, plan).generate(
            ids, max_new_tokens=40, min_new_tokens=40, do_sample=False, use_cache=False
        )
    assert torch.equal(recomputed, right)  # no-cache output is right...
    assert not torch.equal(cached, recomputed)  # ...but cached generation is silently wrong


def _left_padded(rows: list[torch.Tensor], pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of different lengths left-padded into one batch, with their attention mask (as
    lm-eval's HFLM batches generation requests)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = row
        mask[i, width - len(row) :] = 1
    return ids, mask


@pytest.mark.parametrize("plan_text", ["0-8", "0-6,2-8"])
def test_left_padded_batched_generation_equals_each_row_alone(family_model, plan_text):
    """Batched greedy generation on a view: padding, attention mask and positions (counted from
    the mask by ``generate``) leave every row's tokens as they are generated alone."""
    family, base = family_model
    view = build_view(base, Plan.parse(plan_text))
    ids = random_ids(seq_len=24, seed=3, batch=3)
    rows = [ids[0, :24], ids[1, :9], ids[2, :16]]  # lengths differ: the short rows are padded
    batch, mask = _left_padded(rows)
    with torch.inference_mode():
        together = view.generate(
            batch,
            attention_mask=mask,
            max_new_tokens=12,
            min_new_tokens=12,
            do_sample=False,
        )[:, batch.shape[1] :]
    for i, row in enumerate(rows):
        alone = greedy(view, row[None], tokens=12)[0, len(row) :]
        assert torch.equal(together[i], alone), (family, plan_text, i)


def test_control_batched_generation_without_the_mask_differs(family_model):
    """Control: the same batch with the padding attended (no mask) changes a padded row, so the
    check above sees a wrong mask or wrong positions."""
    family, base = family_model
    view = build_view(base, Plan.parse("0-6,2-8"))
    ids = random_ids(seq_len=24, seed=3, batch=3)
    rows = [ids[0, :24], ids[1, :9], ids[2, :16]]
    batch, _ = _left_padded(rows)
    with torch.inference_mode():
        unmasked = view.generate(
            batch,
            attention_mask=torch.ones_like(batch),
            max_new_tokens=12,
            min_new_tokens=12,
            do_sample=False,
        )[:, batch.shape[1] :]
    alone = greedy(view, rows[1][None], tokens=12)[0, len(rows[1]) :]
    assert not torch.equal(unmasked[1], alone), family
