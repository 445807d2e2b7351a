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

RYS space (kind ``rys``)
------------------------
Point ``(i, j)`` with ``0 <= i < j <= N`` runs layers ``0..j-1`` then ``i..N-1`` (plan
``0-j,i-N``), so block ``[i, j)`` runs twice; plus the base plan ``0-N`` recorded as ``i = j = 0``.
``N(N+1)/2 + 1`` points (466 for N=30, 3,241 for N=80). Order: base, then by ``i``, then ``j``.

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
fraction of the length of the slice that jumps back (the later slice of the junction).

Enumeration
-----------
Each point is, in order: dropped as infeasible (counted per reason), dropped as a duplicate (its
layer list equals an earlier point's, e.g. ``0-10,10-20`` after ``0-20``; the first is kept),
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
from typing import Any, ClassVar

from frankensweep.core.errors import UserError
from frankensweep.search.plans import Plan, PlanError, Slice

__all__ = [
    "ExplicitSpace",
    "Filters",
    "InfeasiblePoint",
    "InfeasibleSpaceError",
    "IntRange",
    "OverlapSpace",
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


@dataclass(frozen=True)
class RysSpace(Space):
    """RYS space: plan ``0-j,i-N`` for ``0 <= i < j <= N`` (block ``[i, j)`` twice), plus base."""

    kind: ClassVar[str] = "rys"
    num_layers: int

    def __post_init__(self) -> None:
        _check_num_layers(self.num_layers)

    @property
    def size(self) -> int:
        n = self.num_layers
        return n * (n + 1) // 2 + 1

    @staticmethod
    def plan_for(num_layers: int, i: int, j: int) -> Plan:
        """Plan of point ``(i, j)``; ``i == j`` is the base plan."""
        n = num_layers
        if not (0 <= i <= j <= n):
            raise PlanError(f"RYS point i={i}, j={j} needs 0 <= i <= j <= {n}")
        if i == j:
            return Plan.base(n)
        return Plan((Slice(0, j), Slice(i, n)))

    def candidates(self) -> Iterator[tuple[dict[str, Any], Plan | InfeasiblePoint]]:
        n = self.num_layers
        yield {"i": 0, "j": 0}, Plan.base(n)
        for i in range(n):
            for j in range(i + 1, n + 1):
                yield {"i": i, "j": j}, Plan((Slice(0, j), Slice(i, n)))

    def to_spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "num_layers": self.num_layers}


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
    "rys": {"num_layers"},
    "explicit": {"num_layers", "plans"},
}


def space_from_spec(spec: Mapping[str, Any], num_layers: int | None = None) -> Space:
    """Build a space from its JSON form ``{"kind": "overlap" | "rys" | "explicit", ...}``.

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
        seen: set[tuple[tuple[str | None, int], ...]] = set()
        for params, outcome in self.space.candidates():
            if isinstance(outcome, InfeasiblePoint):
                reason = outcome.reason
                self.infeasible[reason] = self.infeasible.get(reason, 0) + 1
                self.infeasible_examples.setdefault(reason, f"{_fmt_params(params)}: {outcome}")
                continue
            key = tuple(outcome.sources())
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
