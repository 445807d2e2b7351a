"""Perplexity over non-overlapping windows of a tokenized corpus.

The definition, exactly: read the corpus as UTF-8, tokenize it once with the tokenizer's default
settings, keep the first ``tokens`` tokens rounded down to a multiple of ``ctx``, cut them into
non-overlapping windows of ``ctx`` tokens, run each window alone (no context carried between
windows) and score every token but its first; perplexity = exp(total NLL / scored tokens).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from frankensweep.evals.corpus import CorpusError


@dataclass(frozen=True)
class PerplexityResult:
    """Perplexity of one model over one set of windows."""

    perplexity: float
    nll: float  # total negative log-likelihood, nats
    scored_tokens: int

    @property
    def mean_nll(self) -> float:
        return self.nll / self.scored_tokens


def make_windows(token_ids: list[int] | torch.Tensor, tokens: int, ctx: int) -> torch.Tensor:
    """Cut the first ``tokens`` ids (rounded down to a multiple of ``ctx``) into windows."""
    if ctx < 2:
        raise ValueError(f"ctx must be at least 2 tokens (got {ctx})")
    ids = torch.as_tensor(token_ids, dtype=torch.long).flatten()
    usable = min(tokens, ids.numel()) // ctx * ctx
    if usable == 0:
        raise CorpusError(
            f"the corpus has {ids.numel()} tokens, fewer than one window of ctx={ctx}: "
            "lower --ctx or use a longer corpus"
        )
    return ids[:usable].view(-1, ctx)


def tokenize_corpus(tokenizer, text: str) -> list[int]:
    """Tokenize the whole corpus once, with the tokenizer's default settings."""
    return tokenizer(text)["input_ids"]


def window_nll(logits: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
    """Summed NLL (float64) of every token but the first, per window."""
    batch, length, vocab = logits.shape
    targets = windows[:, 1:].to(logits.device).reshape(-1)
    flat = logits[:, :-1].float().reshape(-1, vocab)  # rows contiguous: much faster than [B,V,T]
    nll = F.cross_entropy(flat, targets, reduction="none").view(batch, length - 1)
    return nll.double().sum(dim=1)


def result_from_nll(total_nll: float, windows: torch.Tensor) -> PerplexityResult:
    scored = windows.shape[0] * (windows.shape[1] - 1)
    return PerplexityResult(math.exp(total_nll / scored), total_nll, scored)


@torch.inference_mode()
def perplexity(
    model: nn.Module,
    windows: torch.Tensor,
    batch_size: int = 1,
    progress: Callable[[int], None] | None = None,
) -> PerplexityResult:
    """Perplexity of ``model`` (a base model or a view) on ``windows`` (``[n, ctx]`` ids)."""
    device = next(model.parameters()).device
    total = 0.0
    for start in range(0, windows.shape[0], batch_size):
        batch = windows[start : start + batch_size].to(device)
        logits = model(input_ids=batch, use_cache=False).logits
        total += float(window_nll(logits, batch).sum())
        if progress is not None:
            progress(batch.shape[0])
    return result_from_nll(total, windows)
