"""Fidelity ladders and strategy proposals on plain data (no database, no model)."""

from __future__ import annotations

import pytest

from frankensweep.db.models import CandidateStatus
from frankensweep.evals.registry import EqBenchSpec, PerplexitySpec, PreferenceSpec
from frankensweep.search import OverlapSpace, enumerate_space
from frankensweep.strategies import (
    CandidateState,
    FidelityError,
    SearchState,
    StrategyError,
    ladder,
    make_strategy,
    parse_strategy,
)

PPL = PerplexitySpec(tokens=2048, ctx=512)


def test_ladder_scales_the_screen_eval_and_ends_with_the_full_evals():
    eq = EqBenchSpec(limit=None)
    levels = ladder([PPL, eq], rungs=3, eta=3)
    assert [lv.label for lv in levels] == [
        "perplexity on 227 tokens",
        "perplexity on 512 tokens",
        "full",
    ]
    assert levels[0].evals[0].ctx == 227 and levels[1].evals[0].ctx == 512
    assert levels[2].evals == (PPL, eq) and levels[2].rank_by == PPL
    assert levels[0].loss({"perplexity": 12.0}) == 12.0
    # EQ-Bench with a limit screens by question count; higher is better becomes a lower loss
    screened = ladder([EqBenchSpec(limit=90)], rungs=3, eta=3)
    assert [lv.evals[0].limit for lv in screened] == [10, 30, 90]
    assert screened[0].loss({"eqbench": 40.0}) == -40.0


def test_ladder_refuses_what_it_cannot_screen():
    with pytest.raises(FidelityError, match="add a perplexity eval"):
        ladder([PreferenceSpec(prompts=[{"prompt": "a", "wanted": "b", "unwanted": "c"}])], 3, 3)
    with pytest.raises(FidelityError, match="rung 1 of 4 would score 9 tokens"):
        ladder([PerplexitySpec(tokens=256, ctx=128)], rungs=4, eta=3)


def test_strategy_specs_validate():
    assert parse_strategy("grid").kind == "grid"
    assert parse_strategy({"kind": "halving"}).eta == 3
    with pytest.raises(ValueError, match="budget"):
        parse_strategy({"kind": "tpe"})
    with pytest.raises(StrategyError, match="cmaes needs ordered parameters"):
        make_strategy({"kind": "cmaes", "budget": 4}).check([PPL], "explicit", 10)


def _state(points, candidates, levels):
    return SearchState(
        sweep_id=1,
        round=1,
        levels=levels,
        candidates=candidates,
        storage_url="sqlite://",
        enumerate_points=lambda: points,
    )


def test_halving_promotes_the_best_third_and_says_why_the_rest_were_pruned():
    points = enumerate_space(
        OverlapSpace(30, slice_size=[6, 14, 2], jump=[2, 5], last_slice=[4, 8, 2])
    ).points
    halving = make_strategy({"kind": "halving", "eta": 3, "rungs": 3})
    levels = halving.levels([PPL])
    first = halving.propose(_state(points, [], levels))
    assert len(first.add) == len(points) and {f for _, f, _ in first.add} == {0}
    assert not first.last
    losses = [float((i * 7) % 11) + i / 100 for i in range(len(points))]
    candidates = [
        CandidateState(i, str(p.plan), p.params, 0, CandidateStatus.done, None, loss)
        for i, (p, loss) in enumerate(zip(points, losses, strict=True))
    ]
    candidates[0].status, candidates[0].loss = CandidateStatus.failed, None
    second = halving.propose(_state(points, candidates, levels))
    ranked = sorted((c for c in candidates[1:]), key=lambda c: c.loss)
    keep = -(-len(ranked) // 3)
    assert set(second.promote) == {c.id for c in ranked[:keep]}
    assert set(second.promote.values()) == {1}
    assert set(second.prune) == {c.id for c in ranked[keep:]}  # the failed one is not pruned
    worst = ranked[-1]
    assert second.prune[worst.id] == (
        f"pruned after rung 1 of 3 (perplexity on 227 tokens): perplexity {worst.loss:.4g} "
        f"ranked {len(ranked)} of {len(ranked)}; the best {keep} went on"
    )
    assert not second.last
