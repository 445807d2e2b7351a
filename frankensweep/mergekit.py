"""The ``mergekit-yaml`` command line that writes a recipe's merged model (tests, benchmarks)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

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
