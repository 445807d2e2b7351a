"""Spaces too large to enumerate, for tests and benchmarks of strategies that sample them."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import combinations
from typing import overload

from frankensweep.search import IntRange, RepeatSpace, SpacePoint

__all__ = ["TwoBlockPoints"]


class TwoBlockPoints(Sequence[SpacePoint]):
    """The points of a two-block repeat space, built on demand by index (never all at once).

    Point ``k`` runs a block ``[i1, j1)`` of the first ``split`` layers ``k1`` times and a block
    ``[i2, j2)`` of the others ``k2`` times, its repeated runs scaled by ``s`` (``RepeatSpace``'s
    plan); ``k`` is a mixed-radix number over (block 1, block 2, ``k1``, ``k2``, ``s``). With 30
    layers split at 15, repeats 2..4 and 8 scales: 120 x 120 x 3 x 3 x 8 = 1,036,800 plans, all
    different.
    """

    def __init__(
        self,
        num_layers: int = 30,
        split: int = 15,
        repeats: Sequence[int] = (2, 3, 4),
        scales: Sequence[float] = (1, 0.9, 0.8, 0.75, 0.7, 0.6, 0.5, 0.4),
    ) -> None:
        self.first = list(combinations(range(split + 1), 2))
        self.second = [(i, j) for i, j in combinations(range(split, num_layers + 1), 2)]
        self.repeats = list(repeats)
        self.scales = list(scales)
        self.space = RepeatSpace(
            num_layers, blocks=IntRange(2, 2), repeats=IntRange(min(repeats), max(repeats))
        )
        self.radix = [
            len(self.first),
            len(self.second),
            len(self.repeats),
            len(self.repeats),
            len(self.scales),
        ]

    def __len__(self) -> int:
        size = 1
        for r in self.radix:
            size *= r
        return size

    @overload
    def __getitem__(self, index: int) -> SpacePoint: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[SpacePoint]: ...
    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[k] for k in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        digits = []
        for r in reversed(self.radix):
            index, digit = divmod(index, r)
            digits.append(digit)
        scale, k2, k1, b2, b1 = digits
        (i1, j1), (i2, j2) = self.first[b1], self.second[b2]
        k1_, k2_, s = self.repeats[k1], self.repeats[k2], self.scales[scale]
        plan = self.space.plan_of([(i1, j1, k1_), (i2, j2, k2_)], s)
        params = {"i": i1, "j": j1, "i2": i2, "j2": j2, "k": k1_, "k2": k2_, "scale": s}
        return SpacePoint(plan, params)

    def __iter__(self) -> Iterator[SpacePoint]:
        return (self[k] for k in range(len(self)))
