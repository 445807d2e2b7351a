"""A stored sweep's settings as typed objects, parsed once from its row.

A sweep row keeps its space, evals, strategy and source models as JSON. :func:`sweep_config`
turns them into a :class:`SweepConfig` (space spec and filters, eval specs, the strategy, its
fidelity levels, the source models) and keeps it per sweep: a sweep's settings never change once
stored.

Results are stored per (model, plan digest, eval key). A plan names its source models by the
sweep's own names (``8-16@b``), so the "model" of a sweep with source models is the base model
together with :func:`source_identity` of its sources (:attr:`SweepConfig.result_model`): two
sweeps share results only if their names mean the same models.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from frankensweep.evals.registry import REGISTRY, AnyEvalSpec, parse_eval
from frankensweep.search import Filters, Plan, SpacePoint, enumerate_space, space_from_spec
from frankensweep.strategies import Level, Strategy, make_strategy

if TYPE_CHECKING:
    from frankensweep.db import Sweep

__all__ = ["SweepConfig", "result_model", "source_identity", "sweep_config"]


def source_identity(models: Mapping[str, str]) -> str:
    """Everything that identifies a sweep's source models, as one short text ('' for none).

    A plan's digest covers its model *names*; this covers what each name means: the name ->
    model mapping as submitted (``sources:`` + 16 hex digits of its canonical JSON's sha256).
    The one place to fold in more (e.g. a content fingerprint of each source model's files).
    """
    if not models:
        return ""
    canonical = json.dumps(sorted(models.items()), separators=(",", ":"))
    return "sources:" + hashlib.sha256(canonical.encode()).hexdigest()[:16]


def result_model(model: str, models: Mapping[str, str]) -> str:
    """The "model" results of a sweep are stored under: the base model, and its sources if any."""
    identity = source_identity(models)
    return f"{model} + {identity}" if identity else model


@dataclass(frozen=True)
class SweepConfig:
    """What a sweep searches and how, parsed from its stored row."""

    model: str  # the base model as the user named it
    num_layers: int  # its depth N (every source model has the same)
    space: dict[str, Any]  # the space's spec (``space_from_spec``), filters left out
    filters: Filters
    evals: tuple[AnyEvalSpec, ...]  # the full eval suite, as submitted
    strategy: Strategy
    levels: tuple[Level, ...]  # fidelity levels, cheapest first; the last is the full evals
    models: Mapping[str, str] = field(default_factory=dict)  # source model name -> as named

    @classmethod
    def from_row(cls, sweep: Sweep) -> SweepConfig:
        evals = tuple(parse_eval(e) for e in sweep.evals)
        strategy = make_strategy(sweep.strategy)
        return cls(
            model=sweep.model,
            num_layers=sweep.num_layers,
            space={k: v for k, v in sweep.space.items() if k != "filters"},
            filters=Filters.from_dict(sweep.space.get("filters")),
            evals=evals,
            strategy=strategy,
            levels=tuple(strategy.levels(evals)),
            models=dict(sweep.models or {}),
        )

    @property
    def result_model(self) -> str:
        """The model its results are stored under (see :func:`result_model`)."""
        return result_model(self.model, self.models)

    @property
    def top(self) -> int:
        """The index of the full-fidelity level."""
        return len(self.levels) - 1

    def level_of(self, fidelity: int | None) -> int:
        """The level a candidate at ``fidelity`` is evaluated at (clamped to the ladder)."""
        return min(fidelity or 0, self.top)

    @cached_property
    def metrics(self) -> dict[str, bool]:
        """Primary metric of each eval of the suite -> whether higher is better."""
        return {REGISTRY[s.kind].metric: REGISTRY[s.kind].higher_is_better for s in self.evals}

    def points(self) -> list[SpacePoint]:
        """The plans of the space that its filters keep, the base model's own plan left out."""
        space = space_from_spec(self.space, num_layers=self.num_layers)
        points = enumerate_space(space, self.filters).points
        base = Plan.base(self.num_layers).positions()
        return [p for p in points if p.plan.positions() != base]


#: configs kept per process, least recently used dropped first
_CACHE_SIZE = 256
_cache: OrderedDict[tuple, SweepConfig] = OrderedDict()
_lock = threading.Lock()


def sweep_config(sweep: Sweep) -> SweepConfig:
    """The sweep's :class:`SweepConfig`, parsed on first use and kept (LRU, per process)."""
    if sweep.id is None:  # not stored yet: nothing identifies it
        return SweepConfig.from_row(sweep)
    key = (sweep.id, sweep.created_at, sweep.model)
    with _lock:
        config = _cache.get(key)
        if config is not None:
            _cache.move_to_end(key)
            return config
    config = SweepConfig.from_row(sweep)
    with _lock:
        _cache[key] = config
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return config
