"""Slices and plans: the ordered source-layer ranges of one candidate.

A plan is written ``0-16,8-24,16-30``: each ``START-END`` is a half-open slice ``[START, END)``
of source layers, exactly like mergekit's ``layer_range``. ``START-END@MODEL`` takes the slice from
another (named source) model, as Goliath-style interleaves do; without ``@MODEL``, or with
``@base``, it comes from the sweep's base model. ``START-END*SCALE`` (``8-16@other*0.5``: model
first, then scale) multiplies the output of every attention-output and MLP-output projection of the
slice's layers (``o_proj`` and ``down_proj``) by ``SCALE``, as mergekit's passthrough ``scale``
parameter with those two filters does; the slice's other tensors are unchanged.

Text form, exactly: a scale is a plain positive decimal (``0.5``, ``.75``, ``2``, ``1e-1``; no sign,
no ``nan``/``inf``), finite and > 0. Its canonical text is Python's shortest round-tripping
``repr`` of the float without a trailing ``.0`` (``0.50`` -> ``0.5``, ``2.0`` -> ``2``), and a
scale of exactly 1 is no scale (``8-16*1`` is ``8-16``), so equal plans have one text and one
digest. Model names cannot contain whitespace, commas or ``*`` (they would not survive the text
form); ``base`` names the base model.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from functools import total_ordering

from frankensweep.core.errors import UserError

__all__ = ["BASE_NAME", "Plan", "PlanError", "Slice", "check_scale", "format_scale"]

_SLICE_RE = re.compile(r"^(-?\d+)\s*-\s*(-?\d+)\s*(?:@\s*([^*]*?))?\s*(?:\*\s*(.*?))?$")
_BAD_MODEL_RE = re.compile(r"[\s,*]")
_SCALE_RE = re.compile(r"^(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$")

#: the model name that means the sweep's base model (``0-8@base`` is ``0-8``)
BASE_NAME = "base"


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
        raise PlanError(
            f"{label}: model name {model!r} must not contain whitespace or commas, nor '*'"
        )


def check_scale(value: object, label: str, text: str | None = None) -> float | None:
    """A slice's scale as a float (None for no scale, which 1 is); PlanError if unusable."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PlanError(f"{label}: scale must be a number, got {value!r}")
    scale = float(value)
    if not math.isfinite(scale) or scale <= 0:
        shown = text if text is not None else repr(value)
        raise PlanError(f"{label}: scale must be a finite number > 0, got {shown}")
    return None if scale == 1 else scale


def parse_scale(text: str, label: str) -> float | None:
    """``0.5`` -> 0.5; only plain positive decimals (no sign, nan, inf or underscores)."""
    if "@" in text:
        raise PlanError(f"{label}: write the model before the scale, as START-END@MODEL*SCALE")
    if not _SCALE_RE.match(text):
        raise PlanError(
            f"{label} has scale {text!r}: write a positive number after '*', e.g. \"8-16*0.5\""
        )
    return check_scale(float(text), label, text)


def format_scale(scale: float) -> str:
    """Canonical text of a scale: shortest round-tripping repr, no trailing ``.0``."""
    text = repr(float(scale))
    return text[:-2] if text.endswith(".0") else text


@total_ordering
@dataclass(frozen=True)
class Slice:
    """Half-open range ``[start, end)`` of source layers, optionally from another model."""

    start: int  # first source layer (inclusive)
    end: int  # one past the last source layer (exclusive), like mergekit's layer_range
    model: str | None = None  # source model; None (or "base") = the sweep's base model
    scale: float | None = None  # o_proj / down_proj output multiplier; None (or 1) = unscaled

    def __post_init__(self) -> None:
        label = _label(f"{self.start}-{self.end}", None)
        _check_int(self.start, "start", label)
        _check_int(self.end, "end", label)
        _check_range(self.start, self.end, _label(f"{self.start}-{self.end}", None))
        _check_model(self.model, label)
        if self.model == BASE_NAME:
            object.__setattr__(self, "model", None)
        object.__setattr__(self, "scale", check_scale(self.scale, label))

    def __len__(self) -> int:
        return self.end - self.start

    def __str__(self) -> str:
        text = f"{self.start}-{self.end}"
        if self.model is not None:
            text += f"@{self.model}"
        if self.scale is not None:
            text += f"*{format_scale(self.scale)}"
        return text

    def _key(self) -> tuple[int, int, str, float]:
        return (self.start, self.end, self.model or "", self.scale or 1.0)

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
        """Parse ``"0-16,8-24*0.5,16-30"`` (``START-END[@MODEL][*SCALE]``, spaces tolerated)."""
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
                raise PlanError(
                    f"{label} is not START-END, START-END@MODEL or START-END*SCALE: "
                    'write e.g. "8-24"'
                )
            start, end, model, scale = int(m.group(1)), int(m.group(2)), m.group(3), m.group(4)
            _check_range(start, end, label)
            if model is not None and not model:
                raise PlanError(f"{label} has an empty model after '@': name one or drop the '@'")
            _check_model(model, label)
            value = parse_scale(scale, label) if scale is not None else None
            slices.append(Slice(start, end, model, value))
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

    def positions(self) -> list[tuple[str | None, int, float | None]]:
        """``(model or None, source layer, scale or None)`` of every position: what it computes."""
        return [(s.model, i, s.scale) for s in self.slices for i in s.layers()]

    def models(self) -> list[str]:
        """The source models the plan names (not the base model), in order of first use."""
        return list(dict.fromkeys(s.model for s in self.slices if s.model is not None))

    @property
    def is_self_merge(self) -> bool:
        """True if every slice comes from the base model."""
        return all(s.model is None for s in self.slices)

    @property
    def is_scaled(self) -> bool:
        """True if some slice carries a scale."""
        return any(s.scale is not None for s in self.slices)

    def jumps(self) -> list[int]:
        """Backward jump ``prev.end - cur.start`` at each junction.

        Positive: that many layers run again; 0: contiguous; negative: layers skipped.
        Computed on layer indices whatever the slices' models.
        """
        return [a.end - b.start for a, b in zip(self.slices, self.slices[1:], strict=False)]

    def max_repeats(self) -> int:
        """Highest number of positions that run the same source layer (of the same model)."""
        return max(Counter(self.sources()).values())

    def without_scales(self) -> Plan:
        """The same slices unscaled, contiguous ones of one model joined: the plan's layout."""
        if not self.is_scaled:
            return self
        return Plan(tuple(Slice(s.start, s.end, s.model) for s in self.slices)).merged()

    def merged(self) -> Plan:
        """Same positions, contiguous slices of one model and scale joined (``0-8,8-16`` ->
        ``0-16``)."""
        out: list[Slice] = []
        for s in self.slices:
            last = out[-1] if out else None
            if last and last.end == s.start and (last.model, last.scale) == (s.model, s.scale):
                out[-1] = Slice(last.start, s.end, s.model, s.scale)
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
