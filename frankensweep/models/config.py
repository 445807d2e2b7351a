"""A base model's config and tokenizer read from its files alone (no weights): depth,
architecture, sizes."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from frankensweep.core.errors import first_line
from frankensweep.models.spec import ModelLoadError, resolve_spec

__all__ = [
    "LAYER_CONFIG",
    "config_mismatches",
    "read_config",
    "read_num_layers",
    "read_tokenizer",
]

#: config fields two models must agree on for one's decoder layers to run in the other's stack:
#: architecture, depth, vocabulary, layer shapes, and what a layer reads from its config when it
#: is built (norm epsilon, activation, biases, attention windows and scaling). Embeddings,
#: rotary embeddings, final norm and LM head always come from the base model (and its config).
LAYER_CONFIG = (
    "model_type",
    "num_hidden_layers",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "hidden_act",
    "hidden_activation",
    "rms_norm_eps",
    "attention_bias",
    "mlp_bias",
    "use_sliding_window",
    "sliding_window",
    "max_window_layers",
    "layer_types",
    "query_pre_attn_scalar",
    "attn_logit_softcapping",
)


@lru_cache(maxsize=64)
def _config(spec: str, version: float | None) -> Any:
    from transformers import AutoConfig

    location, kwargs = resolve_spec(spec)
    try:
        config = AutoConfig.from_pretrained(location, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"cannot read the config of {spec}: {first_line(exc, type(exc).__name__)}"
        ) from exc
    return getattr(config, "text_config", None) or config


def _version(spec: str, name: str = "config.json") -> float | None:
    """The mtime of a model's file (``name`` in a directory), None for a hub id."""
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path / name
    try:
        return path.stat().st_mtime if path.exists() else None
    except (OSError, ValueError):
        return None


def read_config(spec: str) -> Any:
    """The (text) config of the named model, cached per file version (its mtime)."""
    return _config(spec, _version(spec))


@lru_cache(maxsize=8)
def _tokenizer(spec: str, version: float | None) -> Any:
    from transformers import AutoTokenizer

    location, kwargs = resolve_spec(spec)
    try:
        return AutoTokenizer.from_pretrained(location, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"cannot read the tokenizer of {spec}: {first_line(exc, type(exc).__name__)}"
        ) from exc


def read_tokenizer(spec: str) -> Any:
    """The tokenizer of the named model (no weights), cached per file version (its mtime)."""
    return _tokenizer(spec, _version(spec, "tokenizer.json"))


def read_num_layers(spec: str) -> int:
    """The decoder depth N of a model from its config alone (no weights are loaded)."""
    depth = getattr(read_config(spec), "num_hidden_layers", None)
    if not isinstance(depth, int):
        raise ModelLoadError(f"{spec}: its config has no num_hidden_layers")
    return depth


def config_mismatches(base: Any, other: Any) -> list[str]:
    """``"vocab_size: 32000 (base model: 49152)"`` for every :data:`LAYER_CONFIG` field on which
    ``other`` differs from ``base`` (configs, or anything with those attributes)."""
    missing = object()
    found = []
    for name in LAYER_CONFIG:
        mine, theirs = getattr(other, name, missing), getattr(base, name, missing)
        if mine != theirs:
            shown = "unset" if mine is missing else repr(mine)
            reference = "unset" if theirs is missing else repr(theirs)
            found.append(f"{name}: {shown} (base model: {reference})")
    return found
