"""Prefix-shared perplexity equals separate evaluation bit for bit, at the tree's layer cost."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from frankensweep.evals.corpus import bundled_text
from frankensweep.evals.perplexity import make_windows, perplexity, tokenize_corpus
from frankensweep.evals.prefix import shared_perplexities, tree_nodes
from frankensweep.search import OverlapSpace, Plan, enumerate_space
from frankensweep.testing.models import TINY_LAYERS, tiny_model
from frankensweep.worker.prefix_views import shared_view_perplexities
from frankensweep.worker.views import build_view

# overlapping plans, a plan that extends another, and two spellings of the base model
TINY_PLANS = [
    "0-8",
    "0-4,4-8",
    "0-8,0-8",
    "0-5,3-8",
    "0-5,2-8",
    "0-6,2-8",
    "0-6,2-8,6-8",
    "0-3,1-8",
    "0-6,3-8",
]
CTX, WINDOWS, BATCH = 12, 3, 2  # longer than the sliding window; last batch is short


def _plans(texts: list[str], num_layers: int = TINY_LAYERS) -> list[Plan]:
    return [Plan.parse(t).validate(num_layers) for t in texts]


def _windows(n: int = WINDOWS, ctx: int = CTX, seed: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 256, (n, ctx), generator=g)


def _separate(base: nn.Module, plans: list[Plan], windows: torch.Tensor, batch_size: int):
    return {p: perplexity(build_view(base, p), windows, batch_size) for p in plans}


def _snapshot(model: nn.Module) -> tuple:
    """Hook counts, layer_idx values and instance attributes that must never change."""
    hooks = sum(
        len(getattr(m, attr))
        for m in model.modules()
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_forward_hooks_with_kwargs")
    )
    idx = [m.layer_idx for m in model.modules() if hasattr(m, "layer_idx")]
    patched = [name for name, m in model.named_modules() if "forward" in m.__dict__]
    return hooks, idx, patched, model.config.to_dict()


def test_tree_nodes_counts_distinct_prefixes():
    # 0123 / 012323 share 4 nodes; 0101 shares 01 with them
    assert tree_nodes(_plans(["0-4", "0-4,2-4", "0-2,0-2"])) == 6 + 2
    assert tree_nodes(_plans(["0-8", "0-4,4-8"])) == 8  # same layers, one leaf
    assert tree_nodes(_plans(["0-4@a", "0-4"])) == 8  # other model: other branch
    assert tree_nodes([]) == 0


def test_shared_equals_separate_bitwise_at_the_tree_lower_bound(family_model):
    family, base = family_model
    plans = _plans(TINY_PLANS)
    windows = _windows()
    before = _snapshot(base)
    with torch.inference_mode():
        logits_before = base(input_ids=windows, use_cache=False).logits
    done = []
    got, stats = shared_view_perplexities(base, plans, windows, BATCH, progress=done.append)
    want = _separate(base, plans, windows, BATCH)
    assert list(got) == plans
    for plan in plans:
        assert got[plan] == want[plan], f"{family} {plan}: {got[plan]} != {want[plan]}"
    assert got[Plan.parse("0-8")] == got[Plan.parse("0-4,4-8")]
    batches = 2
    assert stats.batches == batches
    assert stats.tree_nodes == tree_nodes(plans) * batches
    assert stats.layer_evals == stats.tree_nodes
    assert stats.separate_layer_evals == sum(len(p) for p in plans) * batches
    assert stats.layer_evals < stats.separate_layer_evals
    assert 0 < stats.peak_kept_bytes <= 4 * BATCH * CTX * 32 * 4  # <= 4 branch points kept
    assert sum(done) == len(plans) * WINDOWS
    with torch.inference_mode():
        logits_after = base(input_ids=windows, use_cache=False).logits
    assert _snapshot(base) == before
    assert torch.equal(logits_after, logits_before)


@pytest.mark.parametrize("budget", [0, 2 * CTX * 32 * 4])
def test_small_memory_budget_recomputes_but_stays_exact(budget):
    base = tiny_model("gemma2")
    plans = _plans(TINY_PLANS)
    windows = _windows()
    got, stats = shared_view_perplexities(base, plans, windows, BATCH, memory_budget=budget)
    assert got == _separate(base, plans, windows, BATCH)
    assert stats.peak_kept_bytes <= budget
    assert stats.layer_evals > stats.tree_nodes
    if budget == 0:  # every distinct layer list runs in full ("0-8" and "0-4,4-8" once)
        assert stats.layer_evals == stats.separate_layer_evals - 8 * 2
    else:  # one state per full batch fits: still saves layers
        assert stats.layer_evals < stats.separate_layer_evals


def test_plans_differing_in_layer_arguments_are_refused():
    """A view whose layers get other arguments than its prefix siblings cannot share states."""
    base = tiny_model("llama")

    class Doubled(nn.Module):
        def __init__(self, rotary: nn.Module) -> None:
            super().__init__()
            self.rotary = rotary

        def forward(self, *args, **kwargs):
            return tuple(2 * t for t in self.rotary(*args, **kwargs))

    def make_view(plan: Plan) -> nn.Module:
        view = build_view(base, plan)
        if str(plan) == "0-6,2-8":
            view.model._modules["rotary_emb"] = Doubled(view.model.rotary_emb)
        return view

    with pytest.raises(RuntimeError, match="differ between plans"):
        shared_perplexities(base, _plans(["0-6,0-8", "0-6,2-8"]), _windows(), make_view)


def test_a_view_sharing_the_base_layers_is_refused():
    base = tiny_model("llama")
    with pytest.raises(ValueError, match="fresh view"):
        shared_perplexities(base, _plans(["0-8"]), _windows(), lambda plan: base)
    assert not any("forward" in m.__dict__ for m in base.modules())


# -- the real SmolLM2-135M (30 layers) ---------------------------------------------------------


def _overlap_plans(last_slice: str = "10:14") -> list[Plan]:
    """The 10 plans of slice size 16, jump 4-8, last slice 10-14 (one of them is 0-16,16-30)."""
    return enumerate_space(OverlapSpace(30, slice_size=16, jump="4:8", last_slice=last_slice)).plans


def _smollm2_windows(smollm2, n: int, ctx: int) -> torch.Tensor:
    ids = tokenize_corpus(smollm2.tokenizer, bundled_text()[: 20 * n * ctx])
    return make_windows(ids, n * ctx, ctx)


@pytest.mark.slow
def test_smollm2_overlap_plans_bitwise_and_base_unchanged(smollm2):
    base = smollm2.model
    plans = [*_overlap_plans()[:8], Plan.base(30)]
    windows = _smollm2_windows(smollm2, n=2, ctx=64)
    before = _snapshot(base)
    with torch.inference_mode():
        logits_before = base(input_ids=windows, use_cache=False).logits
    got, stats = shared_view_perplexities(base, plans, windows, batch_size=1)
    assert got == _separate(base, plans, windows, 1)
    assert stats.layer_evals == stats.tree_nodes == tree_nodes(plans) * 2
    assert stats.layer_evals < stats.separate_layer_evals / 2
    with torch.inference_mode():
        logits_after = base(input_ids=windows, use_cache=False).logits
    assert _snapshot(base) == before
    assert torch.equal(logits_after, logits_before)
