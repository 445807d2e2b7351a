"""A stored sweep's settings as typed objects, parsed once from its row.

A sweep row keeps its space, evals and strategy as JSON. :func:`sweep_config` turns them into a
:class:`SweepConfig` (space spec and filters, eval specs, the strategy, its fidelity levels) and
keeps it per sweep: a sweep's settings never change once stored.
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
from frankensweep.models import LoadOptions
from frankensweep.search import Filters, Plan, SpacePoint, enumerate_space, space_from_spec
from frankensweep.strategies import Level, Strategy, make_strategy

if TYPE_CHECKING:
    from frankensweep.db import Sweep

__all__ = ["SweepConfig", "current_model_key", "model_identity", "model_key", "sweep_config"]


def model_identity(
    model: str, sources: Mapping[str, str] | None = None, load: LoadOptions | None = None
) -> dict[str, Any]:
    """Everything that decides what a sweep's plans compute, as it is on disk now: the
    fingerprint of the base model's files (``frankensweep.models.fingerprint``); for each named
    source model a plan may take slices from, its name, path and fingerprint; and, unless they
    are the defaults, the load options that change its numbers (quantization, dtype): an nf4
    score is never reused for a bfloat16 sweep of the same plan."""
    from frankensweep.models import model_fingerprint

    identity: dict[str, Any] = {"weights": model_fingerprint(model)}
    if sources:
        identity["sources"] = {
            name: {"model": spec, "weights": model_fingerprint(spec)}
            for name, spec in sorted(sources.items())
        }
    if load is not None and load.keyed:
        identity["load"] = load.identity()
    return identity


def model_key(model: str, identity: dict[str, Any]) -> str:
    """What results of ``model`` are stored under: its name as given, then a digest of its
    identity (``model_identity``): a rewritten checkpoint gets a new key, never old scores."""
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return f"{model[:960]}#{hashlib.sha256(canonical.encode()).hexdigest()[:32]}"


def current_model_key(
    model: str, sources: Mapping[str, str] | None = None, load: LoadOptions | None = None
) -> str:
    """The key ``model`` (with these source models, loaded with ``load``) would get now."""
    return model_key(model, model_identity(model, sources, load))


@dataclass(frozen=True)
class SweepConfig:
    """What a sweep searches and how, parsed from its stored row."""

    sweep_id: int
    model: str  # the base model as the user named it
    model_key: str  # what its results are stored under (``model_key``)
    load: LoadOptions | None  # how workers load the model (None: stored before load options)
    num_layers: int  # its depth N (every source model has the same)
    space: dict[str, Any]  # the space's spec (``space_from_spec``), filters left out
    filters: Filters
    evals: tuple[AnyEvalSpec, ...]  # the full eval suite, as submitted
    strategy: Strategy
    levels: tuple[Level, ...]  # fidelity levels, cheapest first; the last is the full evals
    models: Mapping[str, str] = field(default_factory=dict)  # source model name -> as named
    identity: Mapping[str, Any] | None = None  # what ``model_key`` digests (None: stored before)

    @classmethod
    def from_row(cls, sweep: Sweep) -> SweepConfig:
        evals = tuple(parse_eval(e) for e in sweep.evals)
        strategy = make_strategy(sweep.strategy)
        return cls(
            sweep_id=sweep.id,
            model=sweep.model,
            model_key=sweep.model_key or sweep.model,  # rows stored before keys: the name
            load=LoadOptions.model_validate(sweep.load_options) if sweep.load_options else None,
            num_layers=sweep.num_layers,
            space={k: v for k, v in sweep.space.items() if k != "filters"},
            filters=Filters.from_dict(sweep.space.get("filters")),
            evals=evals,
            strategy=strategy,
            levels=tuple(strategy.levels(evals)),
            models=dict(sweep.models or {}),
            identity=sweep.identity,
        )

    @property
    def fingerprinted(self) -> bool:
        """Whether the key holds a fingerprint (sweeps stored before keys hold the name)."""
        return self.model_key != self.model

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
