"""The layer prior: statistics of the base model's own hidden states, a zero-cost guide to plans.

Definition, exactly. The corpus (``corpus``, by default the bundled ``pydoc_data.topics``: keep it
apart from the corpus plans are ranked on) is tokenized once; its first ``tokens`` tokens, rounded
down to a multiple of ``ctx``, are cut into windows of ``ctx`` tokens, as perplexity does
(``evals/perplexity.py``). The base model's decoder runs each window alone, without cache; ``h_l``
is the hidden state entering decoder layer ``l`` (``h_0``: the embeddings' output) and ``h_N`` the
last layer's output, before the final norm. Over every token but each window's first (the first
position's state is an outlier on most models), as float64 means:

- ``similarity[a][b]``: the cosine similarity of ``h_a`` and ``h_b`` (``a, b`` in ``0..N``);
- ``distance[a][b]``: ``|h_a - h_b| / |h_b|``, the relative distance of ``h_a`` from ``h_b``;
- ``change[l] = distance[l + 1][l]``: how much layer ``l`` changes its input;
- ``neighbour[l] = similarity[l + 1][l + 2]``: how alike the outputs of layers ``l`` and
  ``l + 1`` are (``l < N - 1``).

A junction of a plan, from a slice ending at layer ``e`` (exclusive) to one starting at layer
``s``, feeds ``h_e`` to a layer that was trained on ``h_s``: its *mismatch* is
``distance[e][s]`` (0 when ``e == s``: contiguous). A plan's *prior score* is the sum of its
junctions' mismatches (lower is better; source models' layers are read on the base model's
statistics, scales are left out). For a repeated block ``[i, j)`` (plan ``0-j,i-N``) it is
``distance[j][i]``: how far the block moves the hidden state, which a second run then has to
undo. Computing the prior costs one forward pass of the base model over ``tokens`` tokens.

``LayerPrior`` and the scores are pure Python (strategies use them); :func:`compute_prior` needs
torch and a loaded model (workers and the command line run it).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from frankensweep.search import Plan

__all__ = ["PRIOR_KIND", "LayerPrior", "PriorSpec", "compute_prior", "prior_key"]

#: the ``eval_kind`` stored priors carry, and the prefix of their keys
PRIOR_KIND = "layer_prior"
#: bumped whenever the statistics' definition changes (old cached priors are then not reused)
VERSION = 1


class PriorSpec(BaseModel):
    """The corpus the prior's statistics are taken on (module doc)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    corpus: str = Field("pydoc_data.topics", description="UTF-8 text file or pydoc_data.topics")
    tokens: int = Field(512, ge=2, le=65536, description="tokens run, rounded down to ctx")
    ctx: int = Field(256, ge=2, le=131072, description="window length in tokens")


def prior_key(spec: PriorSpec) -> str:
    """``layer_prior:<digest>`` of the settings, the corpus' content and the definition's
    version."""
    from frankensweep.evals.registry import PerplexitySpec, get_eval

    corpus = get_eval("perplexity").digest(PerplexitySpec(corpus=spec.corpus))
    data = {"version": VERSION, "corpus": corpus, "tokens": spec.tokens, "ctx": spec.ctx}
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return f"{PRIOR_KIND}:{hashlib.sha256(canonical.encode()).hexdigest()[:16]}"


@dataclass(frozen=True)
class LayerPrior:
    """The statistics of one base model (module doc); ``N + 1`` hidden states, ``N`` layers."""

    similarity: tuple[tuple[float, ...], ...]  # [a][b], a, b in 0..N
    distance: tuple[tuple[float, ...], ...]  # [a][b]: |h_a - h_b| / |h_b|
    tokens: int  # tokens the means are taken over

    @property
    def num_layers(self) -> int:
        return len(self.similarity) - 1

    @property
    def change(self) -> list[float]:
        """How much each layer changes its input: ``distance[l + 1][l]``."""
        return [self.distance[layer + 1][layer] for layer in range(self.num_layers)]

    @property
    def neighbour(self) -> list[float]:
        """Similarity of the outputs of layers ``l`` and ``l + 1``, for ``l < N - 1``."""
        return [self.similarity[layer + 1][layer + 2] for layer in range(self.num_layers - 1)]

    def mismatch(self, end: int, start: int) -> float:
        """The junction from a slice ending at ``end`` to one starting at ``start``."""
        return self.distance[end][start]

    def score(self, plan: Plan) -> float:
        """The plan's prior score: the sum of its junctions' mismatches (lower is better)."""
        return sum(
            self.mismatch(a.end, b.start)
            for a, b in zip(plan.slices, plan.slices[1:], strict=False)
        )

    def best_block(self, length: int | None = None) -> tuple[int, int]:
        """The repeated block ``[i, j)`` with the lowest score (of ``length`` layers if given)."""
        n = self.num_layers
        blocks = [
            (i, j)
            for i in range(n)
            for j in range(i + 1, n + 1)
            if length is None or j - i == length
        ]
        return min(blocks, key=lambda b: (self.mismatch(b[1], b[0]), b))

    def to_json(self) -> dict[str, Any]:
        return {
            "similarity": [list(row) for row in self.similarity],
            "distance": [list(row) for row in self.distance],
            "tokens": self.tokens,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LayerPrior:
        return cls(
            similarity=tuple(tuple(float(x) for x in row) for row in data["similarity"]),
            distance=tuple(tuple(float(x) for x in row) for row in data["distance"]),
            tokens=int(data["tokens"]),
        )

    def summary(self) -> dict[str, Any]:
        """What the dashboard and the command line show: per-layer change and neighbour
        similarity, and the best repeated block overall and of one layer."""
        return {
            "layers": self.num_layers,
            "tokens": self.tokens,
            "change": self.change,
            "neighbour": self.neighbour,
            "best_block": list(self.best_block()),
            "best_layer": self.best_block(1)[0],
        }


def compute_prior(model: Any, tokenizer: Any, spec: PriorSpec) -> LayerPrior:
    """The prior of ``model`` (a base model or a view of it, the hooks go on its own decoder
    layers and are removed after) on ``spec``'s corpus."""
    import torch

    from frankensweep.evals.corpus import load_corpus
    from frankensweep.evals.perplexity import make_windows, tokenize_corpus
    from frankensweep.evals.prefix import decoder_layers

    ids = tokenize_corpus(tokenizer, load_corpus(spec.corpus))
    windows = make_windows(ids, spec.tokens, spec.ctx)
    layers = decoder_layers(model)
    states: list[Any] = []

    def entering(_module: Any, args: tuple, kwargs: dict[str, Any]) -> None:
        states.append(args[0] if args else kwargs["hidden_states"])

    def leaving(_module: Any, _args: tuple, output: Any) -> None:
        states.append(output[0] if isinstance(output, tuple) else output)

    handles = [layer.register_forward_pre_hook(entering, with_kwargs=True) for layer in layers]
    handles.append(layers[-1].register_forward_hook(leaving))
    device = next(model.parameters()).device
    count = len(layers) + 1
    cosine = torch.zeros(count, count, dtype=torch.float64, device=device)
    distance = torch.zeros(count, count, dtype=torch.float64, device=device)
    scored = 0
    try:
        with torch.inference_mode():
            for window in windows:
                states.clear()
                model.model(input_ids=window[None].to(device), use_cache=False)
                if len(states) != count:
                    raise RuntimeError(
                        f"the prior saw {len(states)} hidden states, expected {count}: "
                        "the model's layers ran an unexpected number of times"
                    )
                h = torch.stack([s[0, 1:] for s in states]).to(torch.float64)  # [L, T, H]
                per_token = h.transpose(0, 1)  # [T, L, H]
                norms = per_token.norm(dim=2).clamp_min(1e-300)  # [T, L]
                gram = per_token @ per_token.transpose(1, 2)  # [T, L, L]
                cosine += (gram / (norms[:, :, None] * norms[:, None, :])).sum(0)
                apart = torch.cdist(
                    per_token, per_token, compute_mode="donot_use_mm_for_euclid_dist"
                )
                distance += (apart / norms[:, None, :]).sum(0)
                scored += h.shape[1]
    finally:
        for handle in handles:
            handle.remove()
    return LayerPrior(
        similarity=_rows(cosine / scored),
        distance=_rows(distance / scored),
        tokens=scored,
    )


def _rows(matrix: Any) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(float(x) for x in row) for row in matrix.cpu().tolist())
