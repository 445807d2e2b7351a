"""The three kinds of the repeat, interleave and scaled spaces as views: each equals the model
mergekit would write (a materialized copy) and generates the same with and without its cache."""

from __future__ import annotations

import pytest
import torch

from frankensweep.evals.perplexity import perplexity
from frankensweep.evals.prefix import tree_nodes
from frankensweep.search import InterleaveSpace, Plan, RepeatSpace
from frankensweep.testing.models import (
    TINY_LAYERS,
    greedy,
    materialize,
    random_ids,
    tiny_model,
)
from frankensweep.worker.prefix_views import shared_view_perplexities
from frankensweep.worker.views import build_view, decoder_stack

# two blocks, run 3 and 2 times; an interleave of two models; repeated runs scaled by 0.5
REPEAT = str(RepeatSpace(TINY_LAYERS, blocks=2, repeats=[2, 3]).plan_of([(1, 3, 3), (5, 7, 2)]))
INTERLEAVE = str(InterleaveSpace(TINY_LAYERS, ("base", "other"), 4, 2).plan_for(4, 2, "base"))
SCALED = "0-6,2-6*0.5,6-8"
KINDS = {"repeat": REPEAT, "interleave": INTERLEAVE, "scaled": SCALED}


@pytest.fixture(scope="module")
def others() -> dict[str, dict[str, torch.nn.Module]]:
    """A second model of each family: the same architecture, other weights."""
    return {}


def _other(others, family: str) -> dict[str, torch.nn.Module]:
    if family not in others:
        others[family] = {"other": tiny_model(family, seed=7)}
    return others[family]


_ids = random_ids


def _logits(model, ids):
    with torch.inference_mode():
        return model(input_ids=ids, use_cache=False).logits


def test_the_plans_are_what_their_spaces_say():
    assert REPEAT == "0-3,1-3,1-7,5-8"  # layers 0 1 2 1 2 1 2 3 4 5 6 5 6 7
    assert INTERLEAVE == "0-4,2-6@other,4-8"


@pytest.mark.parametrize("kind", list(KINDS))
def test_view_logits_equal_the_materialized_merge_bitwise(family_model, others, kind):
    family, base = family_model
    sources = _other(others, family)
    plan = Plan.parse(KINDS[kind]).validate(TINY_LAYERS)
    got = _logits(build_view(base, plan, sources), _ids())
    want = _logits(materialize(base, plan, sources), _ids())
    assert torch.equal(got, want), f"{family} {kind}: {(got - want).abs().max()}"


@pytest.mark.parametrize("kind", list(KINDS))
def test_cached_greedy_generation_equals_recompute(family_model, others, kind):
    family, base = family_model
    view = build_view(base, Plan.parse(KINDS[kind]), _other(others, family))
    ids = _ids(seq_len=8)[:1]
    cached, recomputed = greedy(view, ids, 30), greedy(view, ids, 30, cache=False)
    assert cached.shape[1] == ids.shape[1] + 30
    assert torch.equal(cached, recomputed), f"{family} {kind}"


def test_a_scale_other_than_a_power_of_two_is_within_rounding(family_model):
    family, base = family_model
    plan = Plan.parse("0-6,2-6*0.75,6-8")
    got, want = _logits(build_view(base, plan), _ids()), _logits(materialize(base, plan), _ids())
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6), (got - want).abs().max()
    unscaled = _logits(build_view(base, Plan.parse("0-6,2-8")), _ids())
    assert (got - unscaled).abs().max() > 1e-3, family  # control: the scale changes the output


def test_scaled_views_share_the_base_tensors_and_leave_it_unchanged():
    base, other = tiny_model("llama"), tiny_model("llama", seed=7)
    before = {name: t.clone() for name, t in base.state_dict().items()}
    base_ptrs = {p.data_ptr() for m in (base, other) for p in m.parameters()}
    view = build_view(base, Plan.parse("0-6,2-6@other*0.5,6-8*0.25"), {"other": other})
    assert {p.data_ptr() for p in view.parameters()} <= base_ptrs
    layers = decoder_stack(view)[1]
    scaled, plain = layers[6], layers[0]
    assert scaled.self_attn.o_proj.weight is other.model.layers[2].self_attn.o_proj.weight
    assert scaled.mlp.down_proj.frankensweep_scale == 0.5
    assert layers[-1].mlp.down_proj.frankensweep_scale == 0.25
    assert scaled.mlp.up_proj is other.model.layers[2].mlp.up_proj  # only the two are copies
    assert plain.mlp is base.model.layers[0].mlp
    _logits(view, _ids())
    for model in (base, other):  # no module of theirs was patched or given a child
        assert not [n for n, m in model.named_modules() if "forward" in m.__dict__]
        assert all(type(m.mlp.down_proj).__name__ == "Linear" for m in model.model.layers)
    assert all(torch.equal(t, before[name]) for name, t in base.state_dict().items())


def test_prefix_shared_perplexity_of_the_three_kinds_equals_separate_evaluation():
    base, other = tiny_model("qwen2"), tiny_model("qwen2", seed=7)
    sources = {"other": other}
    texts = [*KINDS.values(), "0-6,2-6,6-8", "0-6,2-6*0.25,6-8", "0-4,2-6,4-8", "0-8"]
    plans = [Plan.parse(t) for t in texts]
    g = torch.Generator().manual_seed(3)
    windows = torch.randint(3, 256, (3, 12), generator=g)
    shared, stats = shared_view_perplexities(base, plans, windows, 2, sources=sources)
    for plan in plans:
        separate = perplexity(build_view(base, plan, sources), windows, 2)
        assert shared[plan].nll == separate.nll, str(plan)
    assert len({shared[p].nll for p in plans}) == len(plans)  # scale and model tell them apart
    assert stats.layer_evals == tree_nodes(plans) * stats.batches < stats.separate_layer_evals
