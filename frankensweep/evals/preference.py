"""A cheap eval for early pruning: wanted vs unwanted continuations (the MergeMonster idea).

For each user prompt, the model scores a few continuations it should prefer ("wanted") and a few
it should not ("unwanted"). The score of one continuation is its mean per-token log-likelihood
given the prompt; the score of a prompt is mean(wanted) - mean(unwanted); ``preference`` is the
mean over prompts (higher is better). One padded forward pass scores every continuation of every
prompt for one view, so a sweep pays one short batch per candidate.

Prompts come from a JSON or YAML file (a list of ``{prompt, wanted: [...], unwanted: [...]}``)
or inline. With ``chat=True`` each prompt is wrapped in the tokenizer's chat template as a user
turn with the generation prompt appended.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from torch.nn import functional as F

from frankensweep.core.errors import UserError, first_line


class PreferenceDataError(UserError, ValueError):
    """Prompts are missing or malformed; the message says what to change."""


@dataclass(frozen=True)
class PreferencePrompt:
    prompt: str
    wanted: tuple[str, ...]
    unwanted: tuple[str, ...]


@dataclass(frozen=True)
class PreferenceResult:
    preference: float  # mean over prompts of mean(wanted) - mean(unwanted) log-likelihood
    wanted: float  # mean per-token log-likelihood of wanted continuations
    unwanted: float
    per_prompt: list[dict[str, Any]]


def parse_prompts(data: Any) -> list[PreferencePrompt]:
    """Validate ``[{prompt, wanted, unwanted}, ...]``."""
    if not isinstance(data, list) or not data:
        raise PreferenceDataError("preference prompts must be a non-empty list")
    prompts = []
    for n, item in enumerate(data, 1):
        if not isinstance(item, dict) or not isinstance(item.get("prompt"), str):
            raise PreferenceDataError(f"preference prompt {n} needs a 'prompt' string")
        lists = {}
        for key in ("wanted", "unwanted"):
            value = item.get(key)
            if isinstance(value, str):
                value = [value]
            if not value or not all(isinstance(v, str) and v for v in value):
                raise PreferenceDataError(
                    f"preference prompt {n} needs '{key}': a non-empty list of non-empty strings"
                )
            lists[key] = tuple(value)
        prompts.append(PreferencePrompt(item["prompt"], lists["wanted"], lists["unwanted"]))
    return prompts


def load_prompts(source: str | Path | list) -> list[PreferencePrompt]:
    """Prompts from a JSON/YAML file path, or an inline list."""
    if isinstance(source, list):
        return parse_prompts(source)
    path = Path(source).expanduser()
    if not path.is_file():
        raise PreferenceDataError(f"preference prompts file not found: {source}")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise PreferenceDataError(f"cannot read {source}: {first_line(exc)}") from None
    return parse_prompts(data)


@dataclass(frozen=True)
class PreparedBatch:
    """Token ids of every (prompt, continuation) pair, right-padded, with what to score."""

    input_ids: torch.Tensor  # [n, T]
    attention_mask: torch.Tensor  # [n, T]
    score_mask: torch.Tensor  # [n, T-1]: True where the next token belongs to the continuation
    owner: list[tuple[int, bool]]  # (prompt index, wanted?) per row


def prepare(tokenizer, prompts: Sequence[PreferencePrompt], chat: bool = False) -> PreparedBatch:
    """Tokenize once per base model; shared by every view."""
    rows: list[tuple[list[int], int]] = []
    owner: list[tuple[int, bool]] = []
    for i, p in enumerate(prompts):
        if chat:
            context = tokenizer.apply_chat_template(
                [{"role": "user", "content": p.prompt}], tokenize=False, add_generation_prompt=True
            )
            prefix = tokenizer(context, add_special_tokens=False)["input_ids"]
        else:
            prefix = tokenizer(p.prompt)["input_ids"]
        for wanted, texts in ((True, p.wanted), (False, p.unwanted)):
            for text in texts:
                cont = tokenizer(text, add_special_tokens=False)["input_ids"]
                if not cont:
                    raise PreferenceDataError(f"continuation {text!r} has no tokens")
                rows.append((prefix + cont, len(prefix)))
                owner.append((i, wanted))
    width = max(len(ids) for ids, _ in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    score = torch.zeros((len(rows), width - 1), dtype=torch.bool)
    for r, (ids, prefix_len) in enumerate(rows):
        input_ids[r, : len(ids)] = torch.tensor(ids)
        attention[r, : len(ids)] = 1
        score[r, prefix_len - 1 : len(ids) - 1] = True  # logits at t predict token t+1
    return PreparedBatch(input_ids, attention, score, owner)


@torch.inference_mode()
def preference(
    model: nn.Module, batch: PreparedBatch, prompts: Sequence[PreferencePrompt]
) -> PreferenceResult:
    """Score one model (a base model or a view) on prepared prompts."""
    device = next(model.parameters()).device
    logits = model(
        input_ids=batch.input_ids.to(device),
        attention_mask=batch.attention_mask.to(device),
        use_cache=False,
    ).logits[:, :-1]
    logprobs = -F.cross_entropy(
        logits.float().transpose(1, 2), batch.input_ids[:, 1:].to(device), reduction="none"
    ).cpu()
    mask = batch.score_mask
    per_row = (logprobs * mask).sum(1).double() / mask.sum(1).double()
    per_prompt: list[dict[str, Any]] = []
    wanted_all, unwanted_all = [], []
    for i, p in enumerate(prompts):
        wanted = [float(per_row[r]) for r, (o, w) in enumerate(batch.owner) if o == i and w]
        unwanted = [float(per_row[r]) for r, (o, w) in enumerate(batch.owner) if o == i and not w]
        wanted_all += wanted
        unwanted_all += unwanted
        w_mean, u_mean = sum(wanted) / len(wanted), sum(unwanted) / len(unwanted)
        per_prompt.append(
            {"prompt": p.prompt, "wanted": w_mean, "unwanted": u_mean, "margin": w_mean - u_mean}
        )
    return PreferenceResult(
        preference=sum(p["margin"] for p in per_prompt) / len(per_prompt),
        wanted=sum(wanted_all) / len(wanted_all),
        unwanted=sum(unwanted_all) / len(unwanted_all),
        per_prompt=per_prompt,
    )
