"""mergekit: a plan's passthrough recipe (YAML), and the ``mergekit-yaml`` command that runs one.

mergekit reads Hugging Face weights, not GGUF: for a ``.gguf`` base model the recipe names the
file only if no ``recipe_model`` is given, and :func:`gguf_note` says how to get a readable base
(``frankensweep convert``, then ``--recipe-model DIR``).
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from frankensweep.export.base import ExportError, ExportRequest
from frankensweep.models import is_gguf
from frankensweep.search import DTYPES, plan_to_recipe

__all__ = [
    "MERGEKIT_FLAGS",
    "RecipeExport",
    "gguf_note",
    "mergekit_command",
    "prepare",
    "recipe_text",
]

#: on CPU, tokenizer copied, repeated layers written as real copies, no model card, no bars
MERGEKIT_FLAGS = (
    "--no-cuda",
    "--device",
    "cpu",
    "--copy-tokenizer",
    "--clone-tensors",
    "--no-write-model-card",
    "--quiet",
)


def mergekit_command(recipe_path: str | Path, out_dir: str | Path) -> list[str]:
    """``mergekit-yaml RECIPE OUT`` with :data:`MERGEKIT_FLAGS`; the executable next to this
    interpreter when there (mergekit is a dev extra), else the one on PATH."""
    exe = shutil.which("mergekit-yaml", path=str(Path(sys.executable).parent)) or "mergekit-yaml"
    return [exe, str(recipe_path), str(out_dir), *MERGEKIT_FLAGS]


def gguf_note(model: str, recipe_model: str | None) -> str | None:
    """How to make a GGUF base model readable by mergekit, or None when there is nothing to say."""
    if not is_gguf(model) or recipe_model is not None:
        return None
    return (
        "mergekit reads Hugging Face weights, not GGUF: run `frankensweep convert "
        f"--model {model} --out DIR` and pass --recipe-model DIR (or export --format gguf)"
    )


def recipe_text(request: ExportRequest) -> str:
    """The recipe of ``request.plan`` (dtype bfloat16 unless asked)."""
    dtype = request.dtype or "bfloat16"
    if dtype not in DTYPES:
        raise ExportError(f"dtype {dtype!r} is not supported: use one of {', '.join(DTYPES)}")
    return plan_to_recipe(
        request.plan, request.recipe_model or request.model, dtype, request.sources
    )


@dataclass(frozen=True)
class RecipeExport:
    """A recipe, ready to write."""

    text: str
    note: str | None  # what to tell the user (a GGUF base model), if anything
    total: int | None = None

    def write(self, out: Path, progress: Callable[[int], None] | None = None) -> int:
        data = self.text.encode("utf-8")
        out.write_bytes(data)
        return len(data)


def prepare(request: ExportRequest) -> RecipeExport:
    """The exporter's entry point (see :mod:`frankensweep.export`)."""
    return RecipeExport(recipe_text(request), gguf_note(request.model, request.recipe_model))
