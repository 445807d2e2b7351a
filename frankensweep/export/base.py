"""What every exporter shares: its error, its request, and writing an output all or nothing."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from frankensweep.core.errors import UserError
from frankensweep.search import Plan

__all__ = ["ExportError", "ExportRequest", "Progress", "check_output", "staged_output"]

#: called with a number of units done (bytes for files, tensors for directories)
Progress = Callable[[int], None]


class ExportError(UserError, ValueError):
    """An export that cannot be done as asked; the message says what to change."""


@dataclass(frozen=True)
class ExportRequest:
    """One plan of one base model, to be written in some format."""

    model: str  # the base model as named: HF directory, hub id or .gguf file
    plan: Plan
    dtype: str | None = None  # recipe dtype (mergekit) or weights dtype (hf); None: the default
    recipe_model: str | None = None  # the model name a recipe should carry instead of ``model``
    sources: Mapping[str, str] = field(default_factory=dict)  # source model name -> as named
    device: str = "cpu"  # where an exporter that loads the model loads it


def check_output(out: Path, force: bool) -> None:
    """Refuse an existing output unless ``force``, and a folder to write into that is missing."""
    if out.exists() and not force:
        raise ExportError(f"{out} exists: choose another --out or pass --force to replace it")
    if not out.parent.is_dir():
        raise ExportError(f"cannot write {out}: folder {out.parent} does not exist")


@contextmanager
def staged_output(out: Path, force: bool = False, directory: bool = False) -> Iterator[Path]:
    """A temporary path beside ``out`` that replaces ``out`` only if the block succeeds.

    Nothing is left behind on failure: a half-written export never takes the output's name.
    """
    check_output(out, force)
    parent = out.resolve().parent
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=parent))
    staged = tmp_dir / out.name
    if directory:
        staged.mkdir()
    try:
        yield staged
        if out.is_dir() and not out.is_symlink():
            shutil.rmtree(out)
        elif out.exists() and directory:
            out.unlink()
        os.replace(staged, out)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
