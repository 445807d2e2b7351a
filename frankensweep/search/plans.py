"""Slices and plans: the ordered source-layer ranges of one candidate.

A plan is written ``0-16,8-24,16-30``: each ``START-END`` is a half-open slice ``[START, END)``
of source layers, exactly like mergekit's ``layer_range``. ``START-END@MODEL`` takes the slice from
another model (Goliath-style interleaves); without ``@MODEL`` it comes from the sweep's base model.
Model names cannot contain whitespace or commas (they would not survive the text form).
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from functools import total_ordering

from frankensweep.core.errors import UserError

__all__ = ["Plan", "PlanError", "Slice"]

_SLICE_RE = re.compile(r"^(-?\d+)\s*-\s*(-?\d+)\s*(?:@\s*(.*?))?$")
_BAD_MODEL_RE = re.compile(r"[\s,]")


class PlanError(UserError, ValueError):
    """A plan or slice that cannot be used; the message names the slice and what to change."""


def _label(text: str, number: int | None) -> str:
    """``slice 3 "28-34"`` (or ``slice "28-34"`` without a number)."""
    return f'slice {number} "{text}"' if number is not None else f'slice "{text}"'


def _check_int(value: object, what: str, label: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PlanError(f"{label}: {what} must be an integer, got {value!r}")
    return value


def _check_range(start: int, end: int, label: str) -> None:
    """Raise PlanError unless ``0 <= start < end``."""
    if start < 0:
        raise PlanError(f"{label} starts before layer 0: start must be >= 0")
    if end <= start:
        raise PlanError(f"{label} is empty or reversed: end must be > start ({start})")


def _check_model(model: object, label: str) -> None:
    if model is None:
        return
    if not isinstance(model, str) or not model:
        raise PlanError(f"{label}: model must be a non-empty string or None, got {model!r}")
    if _BAD_MODEL_RE.search(model):
        raise PlanError(f"{label}: model name {model!r} must not contain whitespace or commas")


@total_ordering
@dataclass(frozen=True)
class Slice:
    """Half-open range ``[start, end)`` of source layers, optionally from another model."""

    start: int  # first source layer (inclusive)
    end: int  # one past the last source layer (exclusive), like mergekit's layer_range
    model: str | None = None  # source model; None = the sweep's base model

    def __post_init__(self) -> None:
        label = _label(f"{self.start}-{self.end}", None)
        _check_int(self.start, "start", label)
        _check_int(self.end, "end", label)
        _check_range(self.start, self.end, _label(str(self), None))
        _check_model(self.model, label)

    def __len__(self) -> int:
        return self.end - self.start

    def __str__(self) -> str:
        text = f"{self.start}-{self.end}"
        return f"{text}@{self.model}" if self.model is not None else text

    def _key(self) -> tuple[int, int, str]:
        return (self.start, self.end, self.model or "")

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Slice):
            return NotImplemented
        return self._key() < other._key()

    def layers(self) -> range:
        """Source layer indices of this slice."""
        return range(self.start, self.end)


@total_ordering
@dataclass(frozen=True)
class Plan:
    """Ordered slices of one candidate; hashable, compared by value."""

    slices: tuple[Slice, ...]

    def __post_init__(self) -> None:
        slices = tuple(self.slices)
        if not slices:
            raise PlanError('plan has no slices: give at least one, e.g. "0-16"')
        for number, s in enumerate(slices, 1):
            if not isinstance(s, Slice):
                raise PlanError(f"slice {number} is a {type(s).__name__}, not a Slice")
        object.__setattr__(self, "slices", slices)

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def parse(cls, text: str) -> Plan:
        """Parse ``"0-16,8-24,16-30"`` (``START-END`` or ``START-END@MODEL``, spaces tolerated)."""
        if not isinstance(text, str):
            raise PlanError(f'plan must be text like "0-16,8-24", got {type(text).__name__}')
        if not text.strip():
            raise PlanError(
                'plan is empty: write slices as START-END joined by commas, e.g. "0-16,8-24"'
            )
        slices = []
        for number, raw in enumerate(text.split(","), 1):
            part = raw.strip()
            label = _label(part, number)
            m = _SLICE_RE.match(part)
            if m is None:
                raise PlanError(f'{label} is not START-END or START-END@MODEL: write e.g. "8-24"')
            start, end, model = int(m.group(1)), int(m.group(2)), m.group(3)
            _check_range(start, end, label)
            if model is not None and not model:
                raise PlanError(f"{label} has an empty model after '@': name one or drop the '@'")
            _check_model(model, label)
            slices.append(Slice(start, end, model))
        return cls(tuple(slices))

    @classmethod
    def coerce(cls, value: Plan | str) -> Plan:
        """Return ``value`` if it is a Plan, else parse it."""
        return value if isinstance(value, Plan) else cls.parse(value)

    @classmethod
    def base(cls, num_layers: int) -> Plan:
        """The unmodified model: ``0-N``."""
        return cls((Slice(0, num_layers),))

    # -- text and identity --------------------------------------------------------------------

    def __str__(self) -> str:
        return ",".join(str(s) for s in self.slices)

    def __repr__(self) -> str:
        return f"Plan('{self}')"

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Plan):
            return NotImplemented
        return self.slices < other.slices

    @property
    def digest(self) -> str:
        """First 16 hex digits of the sha256 of the canonical text (stable across runs)."""
        return hashlib.sha256(str(self).encode()).hexdigest()[:16]

    # -- expansion ----------------------------------------------------------------------------

    def __len__(self) -> int:
        """Number of positions (decoder layers of the restacked model)."""
        return sum(len(s) for s in self.slices)

    def layers(self) -> list[int]:
        """Source layer index of every position, in order (``0-2,1-3`` -> ``[0, 1, 1, 2]``)."""
        return [i for s in self.slices for i in s.layers()]

    def sources(self) -> list[tuple[str | None, int]]:
        """``(model or None, source layer)`` of every position, in order."""
        return [(s.model, i) for s in self.slices for i in s.layers()]

    @property
    def is_self_merge(self) -> bool:
        """True if every slice comes from the base model."""
        return all(s.model is None for s in self.slices)

    def jumps(self) -> list[int]:
        """Backward jump ``prev.end - cur.start`` at each junction.

        Positive: that many layers run again; 0: contiguous; negative: layers skipped.
        Computed on layer indices whatever the slices' models.
        """
        return [a.end - b.start for a, b in zip(self.slices, self.slices[1:], strict=False)]

    def max_repeats(self) -> int:
        """Highest number of positions that run the same source layer (of the same model)."""
        return max(Counter(self.sources()).values())

    def merged(self) -> Plan:
        """Same layers, contiguous slices of one model joined (``0-8,8-16`` -> ``0-16``)."""
        out: list[Slice] = []
        for s in self.slices:
            if out and out[-1].end == s.start and out[-1].model == s.model:
                out[-1] = Slice(out[-1].start, s.end, s.model)
            else:
                out.append(s)
        return Plan(tuple(out))

    # -- validation ---------------------------------------------------------------------------

    def validate(self, num_layers: int, model_layers: Mapping[str, int] | None = None) -> Plan:
        """Check every slice fits its model; return the plan.

        ``num_layers`` is the base model's layer count; ``model_layers`` gives other models' counts
        (slices from a model not listed are checked against ``num_layers``).
        """
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
            raise PlanError(f"num_layers must be a positive integer, got {num_layers!r}")
        model_layers = model_layers or {}
        for number, s in enumerate(self.slices, 1):
            label = _label(str(s), number)
            _check_range(s.start, s.end, label)
            limit = model_layers.get(s.model, num_layers) if s.model is not None else num_layers
            if s.end > limit:
                owner = "the model's" if s.model is None else f"{s.model}'s"
                raise PlanError(f"{label} ends past {owner} {limit} layers: end must be <= {limit}")
        return self
