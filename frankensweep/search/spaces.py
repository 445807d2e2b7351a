"""Spaces: generators of plans from a few parameters, and their enumeration.

Overlap space (kind ``overlap``)
--------------------------------
Parameters (each an :class:`IntRange`; the space is their Cartesian product): slice size ``s``,
jump ``j``, last-slice length ``L``, first-slice length ``F`` (omitted: ``F = s`` at every point).
``N`` is the base model's number of layers. The plan of one point ``(s, j, L, F)`` is built thus:

1. The first slice is ``[0, F)``. Let ``e`` be the end of the previous slice.
2. A middle slice ``[e - j, e - j + s)`` (it starts ``j`` layers before the previous slice
   ended) is appended, and step 2 repeated, while its end ``e - j + s <= N - L + j``.
3. The last slice is ``[N - L, N)``. Its own backward jump is ``b = e - (N - L)``.

So every middle junction jumps back exactly ``j`` layers and the last one ``b`` layers,
``0 <= b <= j`` (``b = 0``: contiguous). A point is infeasible (produces no plan) when, checked in
this order:

- ``parameter < 1``: any of ``s, j, L, F`` is below 1;
- ``slice_size > num_layers``, ``last_slice > num_layers``, ``first_slice > num_layers``;
- ``jump >= slice_size``: slices would not advance;
- ``middle slice starts before layer 0``: ``j > F`` and a middle slice fits;
- ``middle slice ends past num_layers``: possible when ``j > L`` (step 2 allows ends up to
  ``N - L + j > N``);
- ``layers skipped before last slice``: ``b < 0``, layers ``e .. N-L-1`` would never run;
- ``last slice jumps back more than jump``: ``b > j``, possible only when no middle slice fits
  (e.g. ``N=30, s=10, j=3, L=25`` would give ``0-10,5-30``).

Edge cases follow the rule as written: ``F = N`` is allowed (``N=30, F=30, s=10, j=3, L=2`` gives
``0-30,28-30``), and so is ``L = N`` when ``b`` stays within ``[0, j]`` (``N=8, s=4, j=3, L=8,
F=3`` gives ``0-3,0-8``); ``j = F`` lets the first middle slice start at layer 0.

Examples: ``N=30, s=10, j=3, L=6`` -> ``0-10,7-17,14-24,24-30``;
``N=32, s=16, j=8, L=8`` -> ``0-16,8-24,16-32,24-32``.

Repeat space (kind ``repeat``)
------------------------------
Parameters: ``blocks`` (how many blocks, an :class:`IntRange`, default 1), ``length`` (block
length, default ``1..N``), ``repeats`` (``k``, how many times each block runs, default 2, each
``>= 2``), ``max_added`` (bound on the added depth, default none) and ``scale`` (a list of scales
for the repeated runs, default ``[1]``). A point is ``b`` blocks ``[i_1, j_1), ..., [i_b, j_b)``
with ``0 <= i_1 < j_1 <= i_2 < j_2 <= ... <= N`` (non-overlapping; adjacent allowed), every
length ``j_a - i_a`` in ``length``, a ``k_a`` in ``repeats`` per block, total added depth
``sum_a (k_a - 1)(j_a - i_a) <= max_added``, and a scale ``s``. Its plan runs the layers in order
with each block run ``k_a`` times in place (``0..j_1-1``, then ``i_1..j_1-1`` ``k_1 - 1`` more
times, then ``j_1..j_2-1``, ...); the ``k_a - 1`` repeated runs (not the first) carry ``s``
(e.g. ``0-20,10-20*0.5,20-30``). ``b = 0`` is the base plan ``0-N`` (a single point: no run to
scale).

Size, known before enumeration: with ``S`` the scales and ``K`` the repeat counts,
``size = [0 in blocks] + |S| * sum_{b in blocks, b >= 1} P(b)``, where ``P(b)`` counts the
block layouts with their ``k``: ``P(b) = sum_{a <= max_added} f(0, b, a)`` with
``f(p, 0, 0) = 1``, ``f(N, b, a) = 0`` otherwise, and
``f(p, b, a) = f(p + 1, b, a) + sum_{l in length, p + l <= N} sum_{k in K} f(p + l, b - 1,
a - (k - 1) l)`` (no block starts at layer ``p``, or a block ``[p, p + l)`` run ``k`` times does;
``f`` is 0 for ``a < 0``). Without bounds on length and added depth this is
``P(b) = C(N + b, 2b) |K|^b`` (the ``2b`` ends ``i_1 <= j_1 - 1 <= i_2 - 1 <= ...`` chosen with
repetition). Order: by ``b``, then the blocks ``(i_1, j_1, i_2, j_2, ...)`` lexicographically,
then ``(k_1, ..., k_b)`` lexicographically, then the scales as given. Every point is feasible
and no two give the same plan (each backward jump of a plan names one block's ends).
Parameters of a point: ``i, j`` (block 1), ``i2, j2``, ... up to the most blocks that fit
(``0, 0`` for absent blocks), ``k, k2, ...`` when ``repeats`` has several values (0 when absent),
``scale`` when several scales are given.

RYS space (kind ``rys``)
------------------------
The repeat space with ``blocks = 0..1``, ``k = 2`` and nothing else: point ``(i, j)`` with
``0 <= i < j <= N`` runs layers ``0..j-1`` then ``i..N-1`` (plan ``0-j,i-N``), so block ``[i, j)``
runs twice; plus the base plan ``0-N`` recorded as ``i = j = 0``. ``N(N+1)/2 + 1`` points (466 for
N=30, 3,241 for N=80). Order: base, then by ``i``, then ``j``.

Interleave space (kind ``interleave``)
--------------------------------------
Goliath-style plans over two or more models of the same architecture and depth. Parameters:
``models`` (the names that take turns, in order; ``base`` is the base model), slice size ``s``
and ``overlap`` ``o`` (each an :class:`IntRange`), ``first`` (the model, or models to search, that
gives the first and the last slice; default the first of ``models``). Slice ``t = 0, 1, ...``
is ``[t(s - o), min(t(s - o) + s, N))`` and comes from ``models[(f + t) mod m]`` (``f`` the
index of ``first``, ``m`` the number of models); slices are appended until one ends at ``N``,
so there are ``T = 1 + ceil((N - s) / (s - o))`` and every junction runs ``o`` layers again
(from the other model), the last slice being ``o + 1 .. s`` layers long. A point is infeasible
when ``s < 1`` or ``o < 0`` (``parameter out of range``), ``s > N``, ``o >= s`` (slices would not
advance), or ``(T - 1) mod m != 0`` (the turns would not bring the last slice back to ``first``).
Example: ``N=30, models=[base, b], s=10, o=5`` -> ``0-10,5-15@b,10-20,15-25@b,20-30``.
Size: ``|s| * |o| * |first|``.

Explicit space (kind ``explicit``)
----------------------------------
A fixed list of plans (text or :class:`Plan`), in the given order.

Filters
-------
Optional, off by default (:class:`Filters`; ``Filters.study_defaults()`` is the study's advice):
``max_repeats`` drops plans running any source layer more than that many times;
``min_last_slice`` drops plans whose last slice is shorter; ``min_jump`` drops plans with a
backward jump ``0 < b < min_jump`` at some junction (contiguous and skipping junctions are not
backward jumps); ``max_jump_fraction`` drops plans with a junction jumping back more than that
fraction of the length of the slice that jumps back (the later slice of the junction). Filters
look at a scaled plan's layout (:meth:`Plan.without_scales`): ``0-20,10-20*0.5,20-30`` is filtered
as ``0-20,10-30``.

Enumeration
-----------
Each point is, in order: dropped as infeasible (counted per reason), dropped as a duplicate (its
positions -- model, layer and scale of each -- equal an earlier point's, e.g. ``0-10,10-20`` after
``0-20``; the first is kept),
dropped by the first active filter it fails (counted per filter), or kept. Nothing is dropped
silently: :class:`SpaceResult` carries every count, and
``size == kept + infeasible + duplicates + removed``. A space whose every point is infeasible
raises :class:`InfeasibleSpaceError` listing the reasons.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Any, ClassVar

from frankensweep.core.errors import UserError
from frankensweep.search.plans import Plan, PlanError, Slice, check_scale

__all__ = [
    "ExplicitSpace",
    "Filters",
    "InfeasiblePoint",
    "InfeasibleSpaceError",
    "IntRange",
    "InterleaveSpace",
    "OverlapSpace",
    "RepeatSpace",
    "RysSpace",
    "Space",
    "SpaceError",
    "SpacePoint",
    "SpaceResult",
    "SpaceStream",
    "enumerate_space",
    "space_from_spec",
    "stream_space",
]


class SpaceError(UserError, ValueError):
    """Space parameters, a range or a filter that cannot be used; the message says why."""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_num_layers(num_layers: object) -> int:
    if not _is_int(num_layers) or num_layers < 1:  # type: ignore[operator]
        raise SpaceError(f"num_layers must be a positive integer, got {num_layers!r}")
    return num_layers  # type: ignore[return-value]


# -- ranges ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IntRange:
    """Inclusive integer range ``min..max`` by ``step`` (``max`` is reached only if on a step)."""

    min: int
    max: int
    step: int = 1

    def __post_init__(self) -> None:
        for f in ("min", "max", "step"):
            value = getattr(self, f)
            if not _is_int(value):
                raise SpaceError(f"range {f} must be an integer, got {value!r}")
        if self.min > self.max:
            raise SpaceError(f"range min {self.min} > max {self.max}: write it as MIN:MAX")
        if self.step < 1:
            raise SpaceError(f"range step must be >= 1, got {self.step}")

    @classmethod
    def parse(cls, text: str, name: str = "range") -> IntRange:
        """Parse CLI text ``"A"``, ``"A:B"`` or ``"A:B:STEP"``."""
        parts = [p.strip() for p in str(text).split(":")]
        try:
            if len(parts) > 3 or not all(parts):
                raise SpaceError
            nums = [int(p) for p in parts]
        except ValueError:
            raise SpaceError(
                f"{name} {text!r} is not A, A:B or A:B:STEP with integers, e.g. 4:16:2"
            ) from None
        try:
            return cls(nums[0], nums[1] if len(nums) > 1 else nums[0], *nums[2:])
        except ValueError as exc:
            raise SpaceError(f"{name} {text!r}: {exc}") from None

    @classmethod
    def coerce(cls, value: Any, name: str = "range") -> IntRange:
        """From JSON ``5``, ``[min, max]``, ``[min, max, step]``, ``{min, max, step}`` or text."""
        if isinstance(value, IntRange):
            return value
        if isinstance(value, str):
            return cls.parse(value, name)
        try:
            if _is_int(value):
                return cls(value, value)
            if isinstance(value, Sequence) and len(value) in (2, 3):
                return cls(*value)
            if isinstance(value, Mapping) and set(value) <= {"min", "max", "step"}:
                return cls(**value)
        except (ValueError, TypeError) as exc:
            raise SpaceError(f"{name} {value!r}: {exc}") from None
        raise SpaceError(
            f"{name} {value!r} is not an integer, [min, max] or [min, max, step] of integers"
        )

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.min, self.max + 1, self.step))

    def __len__(self) -> int:
        return len(range(self.min, self.max + 1, self.step))

    def __contains__(self, value: object) -> bool:
        return value in range(self.min, self.max + 1, self.step)

    def __str__(self) -> str:
        if self.min == self.max:
            return str(self.min)
        return f"{self.min}:{self.max}" + (f":{self.step}" if self.step != 1 else "")

    def to_json(self) -> int | list[int]:
        """``5``, ``[min, max]`` or ``[min, max, step]`` (the inverse of :meth:`coerce`)."""
        if self.min == self.max:
            return self.min
        return [self.min, self.max] + ([self.step] if self.step != 1 else [])


# -- filters -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Filters:
    """Optional plan filters (None = off); dropped plans are counted per filter, never silently."""

    max_repeats: int | None = None  # drop if any source layer runs more than this many times
    min_last_slice: int | None = None  # drop if the last slice is shorter than this
    min_jump: int | None = None  # drop if a backward jump (> 0) at a junction is smaller than this
    max_jump_fraction: float | None = None  # drop if a backward jump > this * len(jumping slice)

    def __post_init__(self) -> None:
        for name in ("max_repeats", "min_last_slice", "min_jump"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 1):
                raise SpaceError(f"filter {name} must be an integer >= 1 or None, got {value!r}")
        frac = self.max_jump_fraction
        if frac is not None and (
            isinstance(frac, bool)
            or not isinstance(frac, int | float)
            or not math.isfinite(frac)
            or frac <= 0
        ):
            raise SpaceError(f"filter max_jump_fraction must be a number > 0 or None, got {frac!r}")

    @classmethod
    def study_defaults(cls) -> Filters:
        """Observations of the public WestLake-7B self-merge study.

        A layer repeated more than twice degrades quality; a last slice shorter than ~6 layers
        gives gibberish; the jump should be > 2 and at most half the slice size.
        """
        return cls(max_repeats=2, min_last_slice=6, min_jump=3, max_jump_fraction=0.5)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Filters:
        """From JSON (unknown keys rejected); None or ``{}`` = no filters."""
        data = dict(data or {})
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            known = ", ".join(f.name for f in fields(cls))
            raise SpaceError(f"unknown filter(s) {', '.join(sorted(unknown))}: known are {known}")
        return cls(**data)

    def to_dict(self) -> dict[str, int | float]:
        """Active filters only."""
        return {
            f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None
        }

    @property
    def active(self) -> list[str]:
        """Names of the filters that are on, in the order they are applied."""
        return list(self.to_dict())

    def check(self, plan: Plan) -> str | None:
        """Name of the first active filter that drops ``plan``, or None if it passes all."""
        plan = plan.without_scales()
        if self.max_repeats is not None and plan.max_repeats() > self.max_repeats:
            return "max_repeats"
        if self.min_last_slice is not None and len(plan.slices[-1]) < self.min_last_slice:
            return "min_last_slice"
        jumps = plan.jumps()
        if self.min_jump is not None and any(0 < b < self.min_jump for b in jumps):
            return "min_jump"
        if self.max_jump_fraction is not None and any(
            b > 0 and b > self.max_jump_fraction * len(s)
            for b, s in zip(jumps, plan.slices[1:], strict=True)
        ):
            return "max_jump_fraction"
        return None


# -- points and results ------------------------------------------------------------------------


class InfeasiblePoint(PlanError):
    """A parameter point that produces no plan; ``reason`` is a short key for counting."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.reason))


class InfeasibleSpaceError(UserError, ValueError):
    """Every point of a space is infeasible."""


@dataclass(frozen=True)
class SpacePoint:
    """One plan of a space and the parameter values that produced it."""

    plan: Plan
    params: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass
class SpaceResult:
    """Kept points of an enumerated space and what was dropped, and why."""

    points: list[SpacePoint]
    size: int  # number of parameter points of the space
    infeasible: dict[str, int]  # reason -> count
    infeasible_examples: dict[str, str]  # reason -> message of its first point
    duplicates: int  # points whose layer list equals an earlier point's
    removed_by_filter: dict[str, int]  # every active filter -> count it dropped (0 included)

    @property
    def plans(self) -> list[Plan]:
        return [p.plan for p in self.points]

    @property
    def kept(self) -> int:
        return len(self.points)

    @property
    def infeasible_total(self) -> int:
        return sum(self.infeasible.values())

    def summary(self) -> str:
        """One line: ``"12 points: 7 kept, 3 infeasible (...), 1 duplicate, 1 filtered (...)"``."""
        return _summary(
            self.size,
            self.kept,
            self.infeasible,
            self.duplicates,
            self.removed_by_filter,
        )


def _fmt_counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in counts.items())


def _summary(
    size: int,
    kept: int,
    infeasible: Mapping[str, int],
    duplicates: int,
    removed: Mapping[str, int],
) -> str:
    text = f"{size} points: {kept} kept, {sum(infeasible.values())} infeasible"
    if infeasible:
        text += f" ({_fmt_counts(infeasible)})"
    text += f", {duplicates} duplicate" + ("" if duplicates == 1 else "s")
    if removed:
        text += f", {sum(removed.values())} filtered ({_fmt_counts(removed)})"
    return text


# -- spaces ------------------------------------------------------------------------------------


class Space(ABC):
    """A generator of plans from parameter points."""

    kind: ClassVar[str]

    @property
    @abstractmethod
    def size(self) -> int:
        """Number of parameter points, known without enumerating."""

    @abstractmethod
    def candidates(self) -> Iterator[tuple[dict[str, Any], Plan | InfeasiblePoint]]:
        """Every parameter point in order, with its plan or why it has none."""

    @abstractmethod
    def to_spec(self) -> dict[str, Any]:
        """JSON form accepted by :func:`space_from_spec`."""


@dataclass(frozen=True)
class OverlapSpace(Space):
    """Overlap space (see module doc); ranges take anything :meth:`IntRange.coerce` accepts."""

    kind: ClassVar[str] = "overlap"
    num_layers: int
    slice_size: IntRange
    jump: IntRange
    last_slice: IntRange
    first_slice: IntRange | None = None  # None: first slice length = slice_size at every point

    def __post_init__(self) -> None:
        _check_num_layers(self.num_layers)
        for name in ("slice_size", "jump", "last_slice", "first_slice"):
            value = getattr(self, name)
            if value is not None or name != "first_slice":
                object.__setattr__(self, name, IntRange.coerce(value, name))

    @property
    def size(self) -> int:
        first = len(self.first_slice) if self.first_slice is not None else 1
        return len(self.slice_size) * len(self.jump) * len(self.last_slice) * first

    def plan_for(
        self, slice_size: int, jump: int, last_slice: int, first_slice: int | None = None
    ) -> Plan:
        """Plan of one point; raises :class:`InfeasiblePoint` saying why not and what to change."""
        n, s, j, last = self.num_layers, slice_size, jump, last_slice
        f = s if first_slice is None else first_slice
        values = {"slice_size": s, "jump": j, "last_slice": last, "first_slice": f}
        for name, value in values.items():
            if not _is_int(value) or value < 1:
                raise InfeasiblePoint(
                    f"{name}={value!r} is not a positive integer: use {name} >= 1",
                    "parameter < 1",
                )
        for name in ("slice_size", "last_slice", "first_slice"):
            if values[name] > n:
                raise InfeasiblePoint(
                    f"{name}={values[name]} is longer than the model's {n} layers: "
                    f"use {name} <= {n}",
                    f"{name} > num_layers",
                )
        if j >= s:
            fix = f"use slice_size >= {j + 1}" + (f" or jump <= {s - 1}" if s > 1 else "")
            raise InfeasiblePoint(
                f"jump={j} is not smaller than slice_size={s}, so slices would not advance: {fix}",
                "jump >= slice_size",
            )
        slices = [Slice(0, f)]
        e = f
        while e - j + s <= n - last + j:
            if e - j < 0:
                raise InfeasiblePoint(
                    f'slice 2 "{e - j}-{e - j + s}" would start before layer 0 '
                    f"(jump={j} > first_slice={f}): use jump <= first_slice",
                    "middle slice starts before layer 0",
                )
            if e - j + s > n:
                raise InfeasiblePoint(
                    f'slice {len(slices) + 1} "{e - j}-{e - j + s}" would end past the model\'s '
                    f"{n} layers (jump={j} > last_slice={last} lets middle slices run to "
                    f"{n - last + j}): use jump <= last_slice or another slice_size",
                    "middle slice ends past num_layers",
                )
            slices.append(Slice(e - j, e - j + s))
            e = e - j + s
        b = e - (n - last)
        if b < 0:
            skipped = f"layer {e}" if e == n - last - 1 else f"layers {e}..{n - last - 1}"
            raise InfeasiblePoint(
                f"{skipped} would be skipped before the last slice "
                f'"{n - last}-{n}": use last_slice >= {n - e} or another slice_size or jump',
                "layers skipped before last slice",
            )
        if b > j:
            raise InfeasiblePoint(
                f'the last slice "{n - last}-{n}" would jump back {b} layers over the first '
                f'slice "0-{f}", more than jump={j}: use last_slice <= {n - f + j} '
                "or a shorter first_slice",
                "last slice jumps back more than jump",
            )
        slices.append(Slice(n - last, n))
        return Plan(tuple(slices)).validate(n)

    def candidates(self) -> Iterator[tuple[dict[str, Any], Plan | InfeasiblePoint]]:
        firsts: Iterable[int | None] = self.first_slice if self.first_slice is not None else [None]
        for s in self.slice_size:
            for j in self.jump:
                for last in self.last_slice:
                    for f in firsts:
                        params = {
                            "slice_size": s,
                            "jump": j,
                            "last_slice": last,
                            "first_slice": s if f is None else f,
                        }
                        try:
                            yield params, self.plan_for(s, j, last, f)
                        except InfeasiblePoint as exc:
                            yield params, exc

    def to_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "kind": self.kind,
            "num_layers": self.num_layers,
            "slice_size": self.slice_size.to_json(),
            "jump": self.jump.to_json(),
            "last_slice": self.last_slice.to_json(),
        }
        if self.first_slice is not None:
            spec["first_slice"] = self.first_slice.to_json()
        return spec


Block = tuple[int, int, int]  # (i, j, k): layers [i, j) run k times

#: most runs of one block in the repeat space (the RYS sequel searched x2..x8)
MAX_REPEATS = 16


def _values(r: IntRange, low: int, high: int) -> list[int]:
    """The values of ``r`` within ``low..high`` (ranges may be far wider than a model)."""
    first = r.min if r.min >= low else r.min + -(-(low - r.min) // r.step) * r.step
    return list(range(first, min(r.max, high) + 1, r.step))


def _scales(value: Any) -> tuple[float, ...]:
    values = list(value) if isinstance(value, list | tuple) else [value]
    if not values:
        raise SpaceError("scale needs at least one value, e.g. [1, 0.75, 0.5]")
    if len(values) > 16:
        raise SpaceError(f"scale has {len(values)} values: give at most 16")
    scales: list[float] = []
    for v in values:
        try:
            scale = check_scale(v, "scale")
        except PlanError as exc:
            raise SpaceError(f"{exc}: use numbers > 0 such as 1, 0.75, 0.5") from None
        scales.append(1.0 if scale is None else scale)
    if len(set(scales)) != len(scales):
        raise SpaceError(f"scale {values!r} repeats a value: give each scale once")
    return tuple(scales)


def _choices(
    layout: Sequence[tuple[int, int]], ks: Sequence[int], budget: int | None
) -> Iterator[tuple[int, ...]]:
    """Repeat counts of the blocks of ``layout``, lexicographically, adding at most ``budget``."""
    if not layout:
        yield ()
        return
    (i, j), rest = layout[0], layout[1:]
    for k in ks:
        cost = (k - 1) * (j - i)
        if budget is not None and cost > budget:
            break
        for tail in _choices(rest, ks, budget - cost if budget is not None else None):
            yield (k, *tail)


@dataclass(frozen=True)
class RepeatSpace(Space):
    """Repeat space (see module doc): blocks of layers, each run ``k`` times in place."""

    kind: ClassVar[str] = "repeat"
    num_layers: int
    blocks: IntRange = IntRange(1, 1)  # how many blocks (0: the base plan)
    length: IntRange | None = None  # block length; None: 1..num_layers
    repeats: IntRange = IntRange(2, 2)  # k: runs of each block (>= 2)
    max_added: int | None = None  # bound on sum (k - 1) * length; None: none
    scale: tuple[float, ...] = (1.0,)  # scale of every repeated run (1: unscaled)

    def __post_init__(self) -> None:
        n = _check_num_layers(self.num_layers)
        for name in ("blocks", "length", "repeats"):
            value = getattr(self, name)
            if value is not None or name != "length":
                object.__setattr__(self, name, IntRange.coerce(value, name))
        if self.blocks.min < 0:
            raise SpaceError(f"blocks must be >= 0, got {self.blocks}")
        if self.length is not None and self.length.min < 1:
            raise SpaceError(f"length must be >= 1 layer, got {self.length}")
        if self.repeats.min < 2 or self.repeats.max > MAX_REPEATS:
            raise SpaceError(
                f"repeats must be 2..{MAX_REPEATS} (a block run once is no repeat), "
                f"got {self.repeats}"
            )
        added = self.max_added
        if added is not None and (not _is_int(added) or added < 1):
            raise SpaceError(f"max_added must be an integer >= 1 or None, got {added!r}")
        object.__setattr__(self, "scale", _scales(self.scale))
        if self.size == 0:
            raise SpaceError(
                f"repeat space has no point: {self.blocks} block(s) of length "
                f"{self.length or f'1:{n}'} run {self.repeats} times"
                + (f" adding at most {added} layers" if added is not None else "")
                + f" do not fit in {n} layers: allow fewer or shorter blocks"
            )

    # -- counting ---------------------------------------------------------------------------

    @property
    def _lengths(self) -> list[int]:
        n = self.num_layers
        return _values(self.length, 1, n) if self.length is not None else list(range(1, n + 1))

    @property
    def _repeats(self) -> list[int]:
        """Repeat counts that can occur (all of them, or those within ``max_added``)."""
        top = self.max_added + 1 if self.max_added is not None else self.repeats.max
        return _values(self.repeats, 2, top)

    @property
    def _max_blocks(self) -> int:
        """The most blocks any point has: capped by how many of the shortest fit."""
        lengths = self._lengths
        return min(self.blocks.max, self.num_layers // lengths[0]) if lengths else 0

    def _layouts_per_count(self) -> list[int]:
        """``P(b)`` for ``b = 0..max blocks`` (module doc), by its recurrence.

        Without ``max_added`` the added depth is not tracked (every ``k`` fits). With it, the
        counts of ``f(p, b, .)`` for added depths ``0..max_added`` are packed into one Python
        integer, ``w`` bits per depth (Kronecker substitution): running a block ``k`` times
        shifts the packed counts by ``(k - 1) l`` fields and adding two rows adds them field by
        field. ``w`` is one bit more than the largest unbounded count, which no field exceeds,
        so no carry ever crosses into the next field below ``max_added``.
        """
        n, bmax, lengths = self.num_layers, self._max_blocks, self._lengths
        ways = len(self._repeats)
        f = [[1] * (n + 1)] + [[0] * (n + 1) for _ in range(bmax)]  # f[b][p], p from n down
        for p in range(n - 1, -1, -1):
            for b in range(1, bmax + 1):
                f[b][p] = f[b][p + 1] + ways * sum(
                    f[b - 1][p + length] for length in lengths if p + length <= n
                )
        unbounded = [f[b][0] for b in range(bmax + 1)]
        top = self.max_added
        if top is None or top >= (self.repeats.max - 1) * n:  # the bound never binds
            return unbounded
        width = max(unbounded).bit_length() + 1
        mask = (1 << (width * (top + 1))) - 1
        ks = self._repeats
        g = [[1] * (n + 1)] + [[0] * (n + 1) for _ in range(bmax)]  # packed over added depth
        for p in range(n - 1, -1, -1):
            for b in range(1, bmax + 1):
                row = g[b][p + 1]
                for length in lengths:
                    if p + length > n:
                        break
                    below = g[b - 1][p + length]
                    for k in ks:
                        shift = (k - 1) * length
                        if shift > top:
                            break
                        row += below << (shift * width)
                g[b][p] = row & mask
        field = (1 << width) - 1
        return [
            sum((g[b][0] >> (a * width)) & field for a in range(top + 1)) for b in range(bmax + 1)
        ]

    @cached_property
    def size(self) -> int:
        per_count = self._layouts_per_count()
        return sum(
            (1 if b == 0 else len(self.scale) * per_count[b])
            for b in _values(self.blocks, 0, len(per_count) - 1)
        )

    # -- plans ------------------------------------------------------------------------------

    def plan_of(self, blocks: Sequence[Block], scale: float = 1.0) -> Plan:
        """Plan running each block ``(i, j, k)`` ``k`` times in place, repeated runs scaled."""
        n = self.num_layers
        scaled = None if scale == 1 else scale
        runs: list[tuple[int, int, float | None]] = []  # (start, end, scale), joined if contiguous
        end = 0

        def add(start: int, stop: int, value: float | None) -> None:
            if runs and runs[-1][1] == start and runs[-1][2] == value:
                runs[-1] = (runs[-1][0], stop, value)
            elif stop > start:
                runs.append((start, stop, value))

        for i, j, k in blocks:
            if not (end <= i < j <= n) or k < 1:
                raise PlanError(
                    f"block {i}-{j} run {k} times does not fit after layer {end} of {n}: blocks "
                    "must be in order, non-overlapping and within the model"
                )
            add(end, j, None)
            for _ in range(k - 1):
                add(i, j, scaled)
            end = j
        add(end, n, None)
        return Plan(tuple(Slice(a, b, None, value) for a, b, value in runs))

    def _layouts(
        self, count: int, start: int, budget: int | None
    ) -> Iterator[list[tuple[int, int]]]:
        """Non-overlapping blocks ``[i, j)`` in ``[start, N)``, lexicographically."""
        if count == 0:
            yield []
            return
        n, lengths, kmin = self.num_layers, set(self._lengths), self.repeats.min
        shortest = min(lengths)
        for i in range(start, n - shortest * count + 1):
            for j in range(i + shortest, n + 1):
                if j - i not in lengths:
                    continue
                cost = (kmin - 1) * (j - i)
                if budget is not None and cost > budget:
                    break
                rest = budget - cost if budget is not None else None
                for tail in self._layouts(count - 1, j, rest):
                    yield [(i, j), *tail]

    def _params(self, blocks: Sequence[Block], scale: float) -> dict[str, Any]:
        params: dict[str, Any] = {}
        several_k = len(self._repeats) > 1
        for a in range(self._max_blocks):
            i, j, k = blocks[a] if a < len(blocks) else (0, 0, 0)
            suffix = "" if a == 0 else str(a + 1)
            params[f"i{suffix}"] = i
            params[f"j{suffix}"] = j
            if several_k:
                params[f"k{suffix}"] = k
        if len(self.scale) > 1:
            params["scale"] = scale
        return params

    def candidates(self) -> Iterator[tuple[dict[str, Any], Plan | InfeasiblePoint]]:
        ks = self._repeats
        for count in _values(self.blocks, 0, self._max_blocks):
            if count == 0:
                yield self._params([], self.scale[0]), Plan.base(self.num_layers)
                continue
            for layout in self._layouts(count, 0, self.max_added):
                for chosen in _choices(layout, ks, self.max_added):
                    blocks = [(i, j, k) for (i, j), k in zip(layout, chosen, strict=True)]
                    for scale in self.scale:
                        yield self._params(blocks, scale), self.plan_of(blocks, scale)

    def to_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "kind": self.kind,
            "num_layers": self.num_layers,
            "blocks": self.blocks.to_json(),
            "repeats": self.repeats.to_json(),
        }
        if self.length is not None:
            spec["length"] = self.length.to_json()
        if self.max_added is not None:
            spec["max_added"] = self.max_added
        if self.scale != (1.0,):
            spec["scale"] = list(self.scale)
        return spec


@dataclass(frozen=True, init=False)
class RysSpace(RepeatSpace):
    """RYS space: plan ``0-j,i-N`` for ``0 <= i < j <= N`` (block ``[i, j)`` twice), plus base;
    the repeat space with ``blocks = 0..1``."""

    kind: ClassVar[str] = "rys"

    def __init__(self, num_layers: int) -> None:
        super().__init__(num_layers, blocks=IntRange(0, 1))

    @staticmethod
    def plan_for(num_layers: int, i: int, j: int) -> Plan:
        """Plan of point ``(i, j)``; ``i == j`` is the base plan."""
        n = num_layers
        if not (0 <= i <= j <= n):
            raise PlanError(f"RYS point i={i}, j={j} needs 0 <= i <= j <= {n}")
        if i == j:
            return Plan.base(n)
        return Plan((Slice(0, j), Slice(i, n)))

    def to_spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "num_layers": self.num_layers}


def _names(value: Any, what: str) -> tuple[str, ...]:
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list | tuple) or not names:
        raise SpaceError(f"{what} must be a model name or a non-empty list of names, got {value!r}")
    for name in names:
        try:
            Slice(0, 1, name)
        except PlanError:
            raise SpaceError(
                f"{what}: {name!r} is not a model name (text without whitespace, commas or '*')"
            ) from None
    if len(set(names)) != len(names):
        raise SpaceError(f"{what} {list(names)!r} names a model twice: name each once")
    return tuple(names)


@dataclass(frozen=True)
class InterleaveSpace(Space):
    """Interleave space (see module doc): slices taking turns over several models."""

    kind: ClassVar[str] = "interleave"
    num_layers: int
    models: tuple[str, ...]  # the models taking turns, in order; "base" = the base model
    slice_size: IntRange
    overlap: IntRange
    first: tuple[str, ...] | None = None  # model(s) of the first and last slice; None: models[0]

    def __post_init__(self) -> None:
        _check_num_layers(self.num_layers)
        models = _names(self.models, "models")
        if len(models) < 2:
            raise SpaceError(f"models {list(models)!r}: an interleave needs at least two models")
        object.__setattr__(self, "models", models)
        for name in ("slice_size", "overlap"):
            object.__setattr__(self, name, IntRange.coerce(getattr(self, name), name))
        if self.first is not None:
            first = _names(self.first, "first")
            unknown = [f for f in first if f not in models]
            if unknown:
                raise SpaceError(
                    f"first {unknown[0]!r} is not one of models {list(models)!r}: name one of them"
                )
            object.__setattr__(self, "first", first)

    @property
    def firsts(self) -> tuple[str, ...]:
        return self.first if self.first is not None else self.models[:1]

    @property
    def size(self) -> int:
        return len(self.slice_size) * len(self.overlap) * len(self.firsts)

    def plan_for(self, slice_size: int, overlap: int, first: str) -> Plan:
        """Plan of one point; raises :class:`InfeasiblePoint` saying why not and what to change."""
        n, s, o, m = self.num_layers, slice_size, overlap, len(self.models)
        if s < 1 or o < 0:
            raise InfeasiblePoint(
                f"slice_size={s}, overlap={o}: use slice_size >= 1 and overlap >= 0",
                "parameter out of range",
            )
        if s > n:
            raise InfeasiblePoint(
                f"slice_size={s} is longer than the models' {n} layers: use slice_size <= {n}",
                "slice_size > num_layers",
            )
        if o >= s:
            raise InfeasiblePoint(
                f"overlap={o} is not smaller than slice_size={s}, so slices would not advance: "
                f"use overlap <= {s - 1}",
                "overlap >= slice_size",
            )
        step = s - o
        count = 1 + -(-(n - s) // step)
        start = self.models.index(first)
        last = self.models[(start + count - 1) % m]
        if (count - 1) % m:
            raise InfeasiblePoint(
                f"slice_size={s}, overlap={o} give {count} slices, so turns over {m} models "
                f"would take the last slice from {last}, not {first}: use another slice_size "
                "or overlap",
                "last slice not from first",
            )
        slices = [
            Slice(t * step, min(t * step + s, n), self.models[(start + t) % m])
            for t in range(count)
        ]
        return Plan(tuple(slices)).validate(n, dict.fromkeys(self.models, n))

    def candidates(self) -> Iterator[tuple[dict[str, Any], Plan | InfeasiblePoint]]:
        for s in self.slice_size:
            for o in self.overlap:
                for first in self.firsts:
                    params = {"slice_size": s, "overlap": o, "first": first}
                    try:
                        yield params, self.plan_for(s, o, first)
                    except InfeasiblePoint as exc:
                        yield params, exc

    def to_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "kind": self.kind,
            "num_layers": self.num_layers,
            "models": list(self.models),
            "slice_size": self.slice_size.to_json(),
            "overlap": self.overlap.to_json(),
        }
        if self.first is not None:
            spec["first"] = list(self.first)
        return spec


@dataclass(frozen=True, init=False)
class ExplicitSpace(Space):
    """A fixed list of plans; with ``num_layers`` each is validated against it up front."""

    kind: ClassVar[str] = "explicit"
    plans: tuple[Plan, ...]
    num_layers: int | None = None

    def __init__(self, plans: Iterable[Plan | str], num_layers: int | None = None) -> None:
        if num_layers is not None:
            _check_num_layers(num_layers)
        if isinstance(plans, str | Plan):
            plans = [plans]
        parsed = []
        for number, p in enumerate(plans, 1):
            try:
                plan = Plan.coerce(p)
                if num_layers is not None:
                    plan.validate(num_layers)
            except PlanError as exc:
                raise PlanError(f'plan {number} "{p}": {exc}') from None
            parsed.append(plan)
        if not parsed:
            raise SpaceError("explicit space has no plans: give at least one")
        object.__setattr__(self, "plans", tuple(parsed))
        object.__setattr__(self, "num_layers", num_layers)

    @property
    def size(self) -> int:
        return len(self.plans)

    def candidates(self) -> Iterator[tuple[dict[str, Any], Plan | InfeasiblePoint]]:
        for index, plan in enumerate(self.plans):
            yield {"index": index}, plan

    def to_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"kind": self.kind, "plans": [str(p) for p in self.plans]}
        if self.num_layers is not None:
            spec["num_layers"] = self.num_layers
        return spec


_SPEC_KEYS: dict[str, set[str]] = {
    "overlap": {"num_layers", "slice_size", "jump", "last_slice", "first_slice"},
    "repeat": {"num_layers", "blocks", "length", "repeats", "max_added", "scale"},
    "rys": {"num_layers"},
    "interleave": {"num_layers", "models", "slice_size", "overlap", "first"},
    "explicit": {"num_layers", "plans"},
}


def space_from_spec(spec: Mapping[str, Any], num_layers: int | None = None) -> Space:
    """Build a space from its JSON form ``{"kind": "overlap" | "repeat" | "rys" | "interleave" |
    "explicit", ...}``.

    ``num_layers`` (the base model's) fills in or must match the spec's ``num_layers``.
    """
    data = dict(spec)
    kind = data.pop("kind", None)
    if kind not in _SPEC_KEYS:
        raise SpaceError(f"space kind {kind!r} is unknown: use one of {', '.join(_SPEC_KEYS)}")
    unknown = set(data) - _SPEC_KEYS[kind]
    if unknown:
        raise SpaceError(
            f"{kind} space does not take {', '.join(sorted(unknown))}: "
            f"it takes {', '.join(sorted(_SPEC_KEYS[kind]))}"
        )
    given = data.pop("num_layers", None)
    if given is not None and num_layers is not None and given != num_layers:
        raise SpaceError(f"space num_layers={given} does not match the model's {num_layers}")
    n = num_layers if num_layers is not None else given
    if kind == "explicit":
        if "plans" not in data:
            raise SpaceError('explicit space needs plans: a list like ["0-16,8-24"]')
        return ExplicitSpace(data["plans"], n)
    if n is None:
        raise SpaceError(f"{kind} space needs num_layers (the base model's number of layers)")
    if kind == "rys":
        return RysSpace(n)
    if kind == "repeat":
        return RepeatSpace(n, **data)
    if kind == "interleave":
        missing = {"models", "slice_size", "overlap"} - set(data)
        if missing:
            raise SpaceError(f"interleave space needs {', '.join(sorted(missing))}")
        return InterleaveSpace(n, **data)
    missing = {"slice_size", "jump", "last_slice"} - set(data)
    if missing:
        raise SpaceError(f"overlap space needs {', '.join(sorted(missing))}")
    return OverlapSpace(n, **data)


# -- enumeration -------------------------------------------------------------------------------


class SpaceStream:
    """Lazy enumeration of a space; counts grow as it is iterated (iterate once)."""

    def __init__(self, space: Space, filters: Filters | None = None) -> None:
        self.space = space
        self.filters = filters or Filters()
        self.size = space.size
        self.kept = 0
        self.infeasible: dict[str, int] = {}
        self.infeasible_examples: dict[str, str] = {}
        self.duplicates = 0
        self.removed_by_filter: dict[str, int] = dict.fromkeys(self.filters.active, 0)
        self._started = False

    def __iter__(self) -> Iterator[SpacePoint]:
        if self._started:
            raise RuntimeError("a SpaceStream can be iterated only once; call stream_space again")
        self._started = True
        return self._run()

    def _run(self) -> Iterator[SpacePoint]:
        seen: set[tuple[tuple[str | None, int, float | None], ...]] = set()
        for params, outcome in self.space.candidates():
            if isinstance(outcome, InfeasiblePoint):
                reason = outcome.reason
                self.infeasible[reason] = self.infeasible.get(reason, 0) + 1
                self.infeasible_examples.setdefault(reason, f"{_fmt_params(params)}: {outcome}")
                continue
            key = tuple(outcome.positions())
            if key in seen:
                self.duplicates += 1
                continue
            seen.add(key)
            dropped_by = self.filters.check(outcome)
            if dropped_by is not None:
                self.removed_by_filter[dropped_by] += 1
                continue
            self.kept += 1
            yield SpacePoint(outcome, params)
        if self.infeasible and sum(self.infeasible.values()) == self.size:
            examples = "; ".join(self.infeasible_examples.values())
            raise InfeasibleSpaceError(
                f"{self.space.kind} space has no feasible point: all {self.size} are infeasible "
                f"({_fmt_counts(self.infeasible)}); e.g. {examples}"
            )

    def result(self, points: list[SpacePoint]) -> SpaceResult:
        """Freeze the counts with the points collected from this stream."""
        return SpaceResult(
            points=points,
            size=self.size,
            infeasible=dict(self.infeasible),
            infeasible_examples=dict(self.infeasible_examples),
            duplicates=self.duplicates,
            removed_by_filter=dict(self.removed_by_filter),
        )

    def summary(self) -> str:
        """One-line counts so far."""
        return _summary(
            self.size, self.kept, self.infeasible, self.duplicates, self.removed_by_filter
        )


def _fmt_params(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


def stream_space(space: Space, filters: Filters | None = None) -> SpaceStream:
    """Lazy enumeration: iterate the result for :class:`SpacePoint` s; counts are on the stream."""
    return SpaceStream(space, filters)


def enumerate_space(space: Space, filters: Filters | None = None) -> SpaceResult:
    """Enumerate a whole space: kept points plus infeasible, duplicate and filtered counts."""
    stream = stream_space(space, filters)
    return stream.result(list(stream))
