"""The repeat and interleave spaces: counts equal the stated formula, plans equal a brute-force
reference, RYS is the repeat space's special case, interleaves follow the stated rule."""

from __future__ import annotations

import itertools
import math

import pytest

from frankensweep.search import (
    Filters,
    InterleaveSpace,
    IntRange,
    Plan,
    RepeatSpace,
    RysSpace,
    SpaceError,
    enumerate_space,
    space_from_spec,
    stream_space,
)

# -- repeat space ------------------------------------------------------------------------------


def brute_force(n, blocks, lengths, repeats, max_added, scales):
    """Every point in the documented order, as (positions, params-free block list, scale).

    Independent of the space's code: all interval tuples are generated and filtered, and the
    layer list is written out run by run.
    """
    intervals = [(i, j) for i in range(n) for j in range(i + 1, n + 1) if j - i in lengths]
    out = []
    for b in blocks:
        if b == 0:
            out.append(([(None, layer, None) for layer in range(n)], [], 1.0))
            continue
        layouts = [
            combo
            for combo in itertools.product(intervals, repeat=b)
            if all(combo[a][1] <= combo[a + 1][0] for a in range(b - 1))
        ]
        for layout in sorted(layouts):
            for ks in itertools.product(repeats, repeat=b):
                added = sum((k - 1) * (j - i) for (i, j), k in zip(layout, ks, strict=True))
                if max_added is not None and added > max_added:
                    continue
                for scale in scales:
                    positions, cur = [], 0
                    for (i, j), k in zip(layout, ks, strict=True):
                        positions += [(None, layer, None) for layer in range(cur, j)]
                        for _ in range(k - 1):
                            positions += [
                                (None, layer, None if scale == 1 else scale)
                                for layer in range(i, j)
                            ]
                        cur = j
                    positions += [(None, layer, None) for layer in range(cur, n)]
                    out.append((positions, list(zip(layout, ks, strict=True)), scale))
    return out


CASES = [
    # n, blocks, length, repeats, max_added, scale
    (4, [0, 1], None, 2, None, [1]),
    (5, [1, 2], None, 2, None, [1]),
    (6, [0, 3], None, [2, 3], None, [1]),
    (6, [1, 2], [2, 3], [2, 4], None, [1]),
    (7, [1, 2], None, [2, 3], 4, [1]),
    (7, [0, 2], [1, 3], [2, 3], 5, [1, 0.75, 0.5]),
    (8, 2, [2, 4, 2], [2, 4, 2], 8, [0.5, 1]),
    (5, [2, 3], 1, [2, 5], 6, [1]),
]


@pytest.mark.parametrize(("n", "blocks", "length", "repeats", "max_added", "scales"), CASES)
def test_repeat_space_equals_brute_force(n, blocks, length, repeats, max_added, scales):
    space = RepeatSpace(
        n, blocks=blocks, length=length, repeats=repeats, max_added=max_added, scale=scales
    )
    lengths = set(IntRange.coerce(length)) if length is not None else set(range(1, n + 1))
    reference = brute_force(
        n,
        list(IntRange.coerce(blocks)),
        lengths,
        list(IntRange.coerce(repeats)),
        max_added,
        [float(s) for s in scales],
    )
    result = enumerate_space(space)
    assert space.size == len(reference) == result.size  # the formula counts every point
    assert result.kept == result.size and result.duplicates == 0 and not result.infeasible
    assert [p.plan.positions() for p in result.points] == [r[0] for r in reference]
    for point, (_, blocks_ks, scale) in zip(result.points, reference, strict=True):
        for a, ((i, j), k) in enumerate(blocks_ks):
            suffix = "" if a == 0 else str(a + 1)
            assert (point.params[f"i{suffix}"], point.params[f"j{suffix}"]) == (i, j)
            if f"k{suffix}" in point.params:
                assert point.params[f"k{suffix}"] == k
        assert point.params.get("scale", scale) == scale


@pytest.mark.parametrize("n", [1, 2, 5, 12, 30, 80])
@pytest.mark.parametrize("b", [1, 2, 3])
@pytest.mark.parametrize("repeats", [2, [2, 4], [2, 8]])
def test_unbounded_size_is_the_closed_form(n, b, repeats):
    """Without length or added-depth bounds, P(b) = C(N + b, 2b) |K|^b."""
    k = len(IntRange.coerce(repeats))
    if 2 * b > n + b:  # no room: the space refuses itself
        with pytest.raises(SpaceError, match="no point"):
            RepeatSpace(n, blocks=b, repeats=repeats)
        return
    assert RepeatSpace(n, blocks=b, repeats=repeats).size == math.comb(n + b, 2 * b) * k**b
    with_base = RepeatSpace(n, blocks=[0, b], repeats=repeats, scale=[1, 0.5])
    expected = 1 + 2 * sum(math.comb(n + c, 2 * c) * k**c for c in range(1, b + 1))
    assert with_base.size == expected


def test_bounded_size_without_enumeration_is_fast_and_exact_on_a_sample():
    space = RepeatSpace(80, blocks=[1, 3], repeats=[2, 8], max_added=40)
    assert space.size == 6_379_983_862  # counted, never enumerated
    small = RepeatSpace(10, blocks=[1, 3], repeats=[2, 8], max_added=6)
    assert small.size == sum(1 for _ in stream_space(small))


def test_rys_is_the_repeat_space_special_case():
    for n in (1, 4, 9, 30):
        rys = enumerate_space(RysSpace(n))
        repeat = enumerate_space(RepeatSpace(n, blocks=[0, 1], repeats=2))
        assert [str(p) for p in rys.plans] == [str(p) for p in repeat.plans]
        assert [p.params for p in rys.points] == [p.params for p in repeat.points]
        assert rys.plans == [Plan.base(n)] + [
            RysSpace.plan_for(n, i, j) for i in range(n) for j in range(i + 1, n + 1)
        ]
    assert RysSpace(30).to_spec() == {"kind": "rys", "num_layers": 30}
    assert space_from_spec({"kind": "rys"}, 30) == RysSpace(30)
    assert RysSpace(30) != RepeatSpace(30, blocks=[0, 1])  # same plans, its own kind


def test_scaled_repeats_split_the_repeated_runs():
    space = RepeatSpace(30, repeats=[2, 3], scale=[1, 0.5], length=10)
    plans = {str(p.plan): p.params for p in enumerate_space(space).points}
    assert plans["0-20,10-30"] == {"i": 10, "j": 20, "k": 2, "scale": 1.0}
    assert plans["0-20,10-20*0.5,20-30"] == {"i": 10, "j": 20, "k": 2, "scale": 0.5}
    assert plans["0-20,10-20*0.5,10-20*0.5,20-30"] == {"i": 10, "j": 20, "k": 3, "scale": 0.5}
    assert "0-20,10-20,10-30" in plans
    assert len(plans) == space.size == 21 * 2 * 2


def test_filters_count_what_they_drop_and_see_the_layout():
    space = RepeatSpace(12, blocks=[0, 2], repeats=[2, 3], scale=[1, 0.5])
    result = enumerate_space(space, Filters(max_repeats=2, min_last_slice=4))
    removed = sum(result.removed_by_filter.values())
    assert result.kept + removed == result.size and removed > 0
    kept = {str(p) for p in result.plans}
    # a scaled plan is filtered by its layout: 0-8,6-8*0.5,8-12 is 0-8,6-12 (last slice 6)
    assert "0-8,6-8*0.5,8-12" in kept and "0-8,6-12" in kept
    assert "0-12,10-12*0.5" not in kept and "0-12,10-12" not in kept  # last slice of 2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"repeats": 1}, "repeats must be 2..16"),
        ({"repeats": [2, 17]}, "repeats must be 2..16"),
        ({"blocks": -1}, "blocks must be >= 0"),
        ({"length": 0}, "length must be >= 1"),
        ({"max_added": 0}, "max_added must be an integer >= 1"),
        ({"scale": [1, 0]}, "scale must be a finite number > 0"),
        ({"scale": [0.5, 0.5]}, "repeats a value"),
        ({"scale": ["x"]}, "scale must be a number"),
        ({"scale": []}, "at least one value"),
        ({"blocks": 5, "length": 3}, "no point"),
        ({"length": 40}, "no point"),
    ],
)
def test_repeat_space_errors(kwargs, match):
    with pytest.raises(SpaceError, match=match):
        RepeatSpace(12, **kwargs)


def test_repeat_spec_round_trip():
    space = RepeatSpace(
        30, blocks=[1, 2], length=[2, 8], repeats=[2, 4], max_added=12, scale=[1, 0.5]
    )
    assert space_from_spec(space.to_spec()) == space
    assert space_from_spec({"kind": "repeat"}, 30) == RepeatSpace(30)
    assert RepeatSpace(30).size == 465


# -- interleave space --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "models", "s", "o", "first", "expected"),
    [
        (30, ["base", "b"], 10, 5, "base", "0-10,5-15@b,10-20,15-25@b,20-30"),
        (30, ["base", "b"], 10, 5, "b", "0-10@b,5-15,10-20@b,15-25,20-30@b"),
        (30, ["base", "b"], 6, 0, "base", "0-6,6-12@b,12-18,18-24@b,24-30"),
        (30, ["base", "b"], 8, 4, "base", "0-8,4-12@b,8-16,12-20@b,16-24,20-28@b,24-30"),
        (30, ["a", "b", "base"], 6, 2, "a", "0-6@a,4-10@b,8-14,12-18@a,16-22@b,20-26,24-30@a"),
        (30, ["base", "b"], 30, 0, "b", "0-30@b"),
    ],
)
def test_interleave_by_hand(n, models, s, o, first, expected):
    space = InterleaveSpace(n, models, s, o, first)
    assert str(space.plan_for(s, o, first)) == expected
    plan = Plan.parse(expected)
    assert plan.slices[0].model == plan.slices[-1].model  # first and last from `first`
    assert all(j == o for j in plan.jumps()[:-1]) and len(plan.slices[-1]) <= s


def test_interleave_counts_infeasible_points_per_reason():
    space = InterleaveSpace(30, ["base", "b"], [6, 12], [0, 6], first=["base", "b"])
    result = enumerate_space(space)
    assert space.size == 7 * 7 * 2 == result.size
    assert result.kept + result.infeasible_total + result.duplicates == result.size
    assert set(result.infeasible) == {"last slice not from first", "overlap >= slice_size"}
    for point in result.points:  # every kept plan alternates and ends on its first model
        models = [s.model or "base" for s in point.plan.slices]
        assert models[0] == models[-1] == point.params["first"]
        assert all(a != b for a, b in itertools.pairwise(models))
        assert point.plan.layers()[-1] == 29
    assert space_from_spec(space.to_spec()) == space


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"models": ["base"]}, "at least two models"),
        ({"models": ["base", "base"]}, "names a model twice"),
        ({"models": ["base", "a b"]}, "is not a model name"),
        ({"first": "c"}, "first 'c' is not one of models"),
        ({"overlap": "x"}, "overlap"),
    ],
)
def test_interleave_errors(kwargs, match):
    args = {"models": ["base", "b"], "slice_size": 8, "overlap": 4} | kwargs
    with pytest.raises(SpaceError, match=match):
        InterleaveSpace(30, **args)
