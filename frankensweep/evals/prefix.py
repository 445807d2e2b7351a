"""Prefix-shared perplexity: many plans, each shared layer prefix computed once per token batch.

Plans are put in a prefix tree of their positions -- ``(model, source layer, scale)`` lists, see
``Plan.positions`` -- and walked depth first (lexicographic order of the lists). Every plan still
runs through its own view and the model's own forward (embeddings, masks, rotary embeddings, final
norm, LM head and loss per plan), so whatever
a family does there (Gemma's embedding scaling, per-layer-type rotary and masks, softcapping) stays
exact; only the decoder layers of a shared prefix are skipped. For every plan, each position of the
view has its ``forward`` replaced (on the view's own layer object) by a memo step:

- positions up to the *resume point* (the deepest kept tree node on the plan's path) return the
  kept hidden state without running; at the resume point the call's arguments (masks, position
  embeddings, ...) are checked equal to those the state was computed with, else RuntimeError;
- later positions run; their output is kept only if it is a tree node some later plan resumes from
  (a branch point of the remaining walk) and it fits the memory budget; a kept state is dropped
  after the last plan that resumes from it.

With ``use_cache=False`` a decoder layer's output depends only on its input, its weights and those
arguments, so the result of every plan equals ``perplexity(make_view(plan), windows, batch_size)``
bit for bit, NLL sums included (per-batch sums are added in the same order). With an unbounded
budget each tree node runs once per batch: the layer evaluations reach the lower bound
:func:`tree_nodes`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from frankensweep.evals.perplexity import PerplexityResult, result_from_nll, window_nll

if TYPE_CHECKING:
    from frankensweep.search import Plan

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "PrefixStats",
    "decoder_layers",
    "prefix_order",
    "shared_perplexities",
    "tree_nodes",
]

#: default bound on the bytes of hidden states kept for reuse (1 GiB)
DEFAULT_MEMORY_BUDGET = 1 << 30

Source = tuple[str | None, int, float | None]  # a position: model (None: base), layer, scale


@dataclass(frozen=True)
class PrefixStats:
    """What a prefix-shared evaluation cost, in decoder-layer forwards summed over batches."""

    layer_evals: int  # decoder-layer forwards actually run
    separate_layer_evals: int  # forwards that evaluating every plan separately runs
    tree_nodes: int  # lower bound: distinct prefixes (tree nodes) x batches
    peak_kept_bytes: int  # most bytes of hidden states kept at once
    batches: int  # token batches (each walks the whole tree)

    @property
    def saved_fraction(self) -> float:
        """Fraction of the separate layer forwards that were skipped."""
        return 1 - self.layer_evals / self.separate_layer_evals if self.separate_layer_evals else 0


def _source_key(seq: tuple[Source, ...]) -> tuple[tuple[bool, str, int, float], ...]:
    """Total order on position lists (base model and no scale first); lexicographic =
    depth-first order."""
    return tuple(
        (model is not None, model or "", layer, scale or 1.0) for model, layer, scale in seq
    )


def prefix_order(plan: Plan) -> tuple[tuple[bool, str, int, float], ...]:
    """Sort key putting plans in the walk's depth-first order (shared prefixes together)."""
    return _source_key(tuple(plan.positions()))


def _common(a: Sequence[Source], b: Sequence[Source]) -> int:
    """Length of the common prefix of two source lists."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _sorted_sources(plans: Iterable[Plan]) -> list[tuple[Source, ...]]:
    return sorted({tuple(plan.positions()) for plan in plans}, key=_source_key)


def tree_nodes(plans: Iterable[Plan]) -> int:
    """Distinct non-empty prefixes of the plans' source lists: layer forwards needed per batch."""
    seqs = _sorted_sources(plans)
    return sum(len(s) - _common(p, s) for p, s in zip([(), *seqs], seqs, strict=False))


@dataclass
class _Step:
    """One distinct source list in the depth-first walk, and the plans that share it."""

    plans: list[Plan]
    nodes: list[int]  # tree node id of every position
    resume_from: list[int]  # positions (deepest first) whose kept state this step may reuse
    keep: frozenset[int]  # positions whose output a later step resumes from (if not kept yet)
    drop_after: list[int]  # node ids no later step resumes from


def _schedule(plans: Sequence[Plan]) -> tuple[list[_Step], int]:
    """The walk: steps in depth-first order, and the number of tree nodes."""
    groups: dict[tuple[Source, ...], list[Plan]] = {}
    for plan in plans:
        groups.setdefault(tuple(plan.positions()), []).append(plan)
    seqs = sorted(groups, key=_source_key)
    paths: list[list[int]] = []
    resume: list[int] = []  # shared depth with the previous step
    last_use: dict[int, int] = {}  # node id -> last step resuming from it
    count = 0
    prev: tuple[Source, ...] = ()
    for k, seq in enumerate(seqs):
        shared = _common(prev, seq)
        fresh = len(seq) - shared
        path = (paths[-1][:shared] if paths else []) + list(range(count, count + fresh))
        count += fresh
        if shared:
            last_use[path[shared - 1]] = k
        paths.append(path)
        resume.append(shared)
        prev = seq
    drops: dict[int, list[int]] = {}
    for node, k in last_use.items():
        drops.setdefault(k, []).append(node)
    steps = []
    for k, (seq, path) in enumerate(zip(seqs, paths, strict=True)):
        steps.append(
            _Step(
                plans=groups[seq],
                nodes=path,
                resume_from=[p for p in range(resume[k] - 1, -1, -1) if path[p] in last_use],
                keep=frozenset(p for p, node in enumerate(path) if last_use.get(node, -1) > k),
                drop_after=drops.get(k, []),
            )
        )
    return steps, count


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder stack of a ``*ForCausalLM`` (``model.model.layers``): base models and views."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise TypeError(f"{type(model).__name__} has no decoder stack at .model.layers")
    return layers


def _nbytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, tuple | list):
        return sum(_nbytes(v) for v in value)
    return 0


def _same(a: Any, b: Any) -> bool:
    """Equal layer arguments: tensors bitwise, containers element-wise, others by ``==``."""
    if a is b:
        return True
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.shape == b.shape
            and a.dtype == b.dtype
            and a.device == b.device
            and bool(torch.equal(a, b))
        )
    if isinstance(a, tuple | list):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict):
        return type(b) is dict and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:
        return False


def _layer_args(args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
    """A layer call's arguments other than the hidden states."""
    if args:
        return args[1:], kwargs
    return args, {k: v for k, v in kwargs.items() if k != "hidden_states"}


class _Walk:
    """Kept hidden states of one token batch, and the counters of the whole evaluation."""

    def __init__(self, memory_budget: int) -> None:
        self.budget = memory_budget
        self.kept: dict[int, tuple[Any, tuple, dict[str, Any]]] = {}  # node -> out, args, kwargs
        self.kept_bytes = 0
        self.peak_bytes = 0
        self.layer_evals = 0

    def resume_point(self, step: _Step) -> int:
        """Deepest position of ``step`` whose state is kept (-1: run from the embeddings)."""
        return next((p for p in step.resume_from if step.nodes[p] in self.kept), -1)

    def forward(self, step: _Step, position: int, resume: int, run: Callable) -> Callable:
        """The memo step replacing the forward of ``step``'s layer at ``position``."""
        node = step.nodes[position]

        def memo_forward(*args: Any, **kwargs: Any) -> Any:
            if position <= resume:
                out, kept_args, kept_kwargs = self.kept[step.nodes[resume]]
                if position == resume and not _same(
                    _layer_args(args, kwargs), (kept_args, kept_kwargs)
                ):
                    raise RuntimeError(
                        f"layer arguments at position {position} differ between plans sharing "
                        "this prefix: this model cannot be evaluated with prefix sharing"
                    )
                return out
            out = run(*args, **kwargs)
            self.layer_evals += 1
            if position in step.keep and node not in self.kept:
                size = _nbytes(out)
                if self.kept_bytes + size <= self.budget:
                    self.kept[node] = (out, *_layer_args(args, kwargs))
                    self.kept_bytes += size
                    self.peak_bytes = max(self.peak_bytes, self.kept_bytes)
            return out

        return memo_forward

    def drop(self, nodes: Iterable[int]) -> None:
        for node in nodes:
            entry = self.kept.pop(node, None)
            if entry is not None:
                self.kept_bytes -= _nbytes(entry[0])


@torch.inference_mode()
def shared_perplexities(
    base: nn.Module,
    plans: Iterable[Plan],
    windows: torch.Tensor,
    make_view: Callable[[Plan], nn.Module],
    batch_size: int = 1,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    progress: Callable[[int], None] | None = None,
) -> tuple[dict[Plan, PerplexityResult], PrefixStats]:
    """Perplexity of every plan on ``windows``, each shared layer prefix computed once per batch.

    ``make_view(plan)`` must return a fresh view of ``base`` owning its decoder-layer objects (as
    ``frankensweep.worker.views.build_view`` does); the memo steps are set on those objects and
    removed afterwards, so nothing reaches ``base``. Results equal separate evaluation bit for bit.

    Memory: the kept hidden states never exceed ``memory_budget`` bytes; without the budget they
    would be at most (branch points on the current tree path) x batch x ctx x hidden x dtype
    bytes. A state that does not fit is not kept, and the plans resuming from it recompute from a
    shallower kept state (``memory_budget=0`` recomputes everything, like separate evaluation).
    ``progress`` gets the number of (plan, window) units done after each plan and batch.
    """
    if memory_budget < 0:
        raise ValueError(f"memory_budget must be >= 0 bytes, got {memory_budget}")
    plans = list(dict.fromkeys(plans))
    steps, nodes = _schedule(plans)
    base_layers = {id(layer) for layer in decoder_layers(base)}
    device = next(base.parameters()).device
    totals = dict.fromkeys(plans, 0.0)
    walk = _Walk(memory_budget)
    batches = 0
    for start in range(0, windows.shape[0], batch_size):
        batch = windows[start : start + batch_size].to(device)
        batches += 1
        for step in steps:
            view = make_view(step.plans[0])
            layers = list(decoder_layers(view))
            if len(layers) != len(step.nodes) or any(id(x) in base_layers for x in layers):
                raise ValueError(
                    "make_view must return a fresh view with one layer object of its own per "
                    "plan position (as build_view does)"
                )
            resume = walk.resume_point(step)
            try:
                for position, layer in enumerate(layers):
                    layer.forward = walk.forward(step, position, resume, layer.forward)
                logits = view(input_ids=batch, use_cache=False).logits
            finally:
                for layer in layers:
                    layer.__dict__.pop("forward", None)
            nll = float(window_nll(logits, batch).sum())
            del logits
            for plan in step.plans:
                totals[plan] += nll
            walk.drop(step.drop_after)
            if progress is not None:
                progress(batch.shape[0] * len(step.plans))
        walk.drop(list(walk.kept))
    stats = PrefixStats(
        layer_evals=walk.layer_evals,
        separate_layer_evals=sum(len(plan) for plan in plans) * batches,
        tree_nodes=nodes * batches,
        peak_kept_bytes=walk.peak_bytes,
        batches=batches,
    )
    return {plan: result_from_nll(totals[plan], windows) for plan in plans}, stats
