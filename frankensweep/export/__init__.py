"""Exports: a plan of a base model written in a format other tools read.

A small registry, format name -> :class:`Exporter`. Each format's module has
``prepare(request) -> job``: it checks everything that can be checked before a byte is written
(and before weights are loaded), and the job's ``write(path, progress) -> bytes written`` writes
the output; :func:`export` stages it beside its final name, so a failed export leaves nothing.

- ``gguf`` (a file, :mod:`.gguf`): the source GGUF's own tensor bytes renumbered per position,
  streamed;
- ``hf`` (a directory, :mod:`.hf`): config, safetensors and tokenizer written from the view;
- ``mergekit`` (a file, :mod:`.mergekit`): the passthrough recipe that mergekit turns into a
  model.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from frankensweep.export.base import (
    ExportError,
    ExportRequest,
    Progress,
    check_output,
    staged_output,
)

__all__ = [
    "FORMATS",
    "ExportError",
    "ExportRequest",
    "Exporter",
    "check_output",
    "export",
    "get_exporter",
    "staged_output",
]


@dataclass(frozen=True)
class Exporter:
    """One export format."""

    name: str
    directory: bool  # writes a directory (else one file)
    summary: str
    module: str  # defines ``prepare(request) -> job``; imported when used

    def prepare(self, request: ExportRequest) -> Any:
        """The checked job for ``request`` (raises :class:`ExportError` for what cannot be)."""
        return importlib.import_module(self.module).prepare(request)


FORMATS: dict[str, Exporter] = {
    exporter.name: exporter
    for exporter in (
        Exporter(
            "gguf",
            False,
            "a GGUF file: the base GGUF's own quantized tensors per position",
            "frankensweep.export.gguf",
        ),
        Exporter(
            "hf",
            True,
            "a Hugging Face directory (config, safetensors, tokenizer)",
            "frankensweep.export.hf",
        ),
        Exporter(
            "mergekit",
            False,
            "the mergekit passthrough recipe (YAML)",
            "frankensweep.export.mergekit",
        ),
    )
}


def get_exporter(name: str) -> Exporter:
    """The exporter of format ``name``; an :class:`ExportError` naming the formats otherwise."""
    try:
        return FORMATS[name]
    except KeyError:
        raise ExportError(
            f"unknown export format {name!r}: use one of {', '.join(FORMATS)}"
        ) from None


def export(
    name: str,
    request: ExportRequest,
    out: Path,
    *,
    force: bool = False,
    progress: Progress | None = None,
) -> int:
    """Write ``request`` as format ``name`` at ``out``; return the bytes written."""
    exporter = get_exporter(name)
    check_output(out, force)
    job = exporter.prepare(request)
    with staged_output(out, force, exporter.directory) as staged:
        return job.write(staged, progress)
