"""A base model's config read from its files alone (no weights): depth, architecture, sizes."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from frankensweep.core.errors import first_line
from frankensweep.models.spec import ModelLoadError, resolve_spec

__all__ = ["read_config", "read_num_layers"]


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


def read_config(spec: str) -> Any:
    """The (text) config of the named model, cached per file version (its mtime)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path / "config.json"
    try:
        version = path.stat().st_mtime if path.exists() else None
    except (OSError, ValueError):
        version = None
    return _config(spec, version)


def read_num_layers(spec: str) -> int:
    """The decoder depth N of a model from its config alone (no weights are loaded)."""
    depth = getattr(read_config(spec), "num_hidden_layers", None)
    if not isinstance(depth, int):
        raise ModelLoadError(f"{spec}: its config has no num_hidden_layers")
    return depth
