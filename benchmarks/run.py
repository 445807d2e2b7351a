"""Run benchmark sections, print a table per section and update ``docs/benchmarks.md``.

    python -m benchmarks.run                 # every section
    python -m benchmarks.run --only engine   # one section (repeat or comma-join for more)
    python -m benchmarks.run --quick         # fewer repetitions

Adding a section: write ``benchmarks/<name>.py`` with ``run(quick: bool) -> Section`` and
register it in :data:`SECTIONS`. Each section becomes one ``## <name>`` block of the markdown
file; re-running a section replaces its block in place and leaves the other blocks as they are.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from benchmarks import Section, load_average

#: section name -> module defining ``run(quick: bool) -> Section``, in run order
SECTIONS: dict[str, str] = {
    "engine": "benchmarks.engine",
    "sweep": "benchmarks.sweep",
    "eq_bench": "benchmarks.eq_bench",
    "load": "benchmarks.load",
    "search": "benchmarks.search",
    "search_rys": "benchmarks.search_rys",
    "export": "benchmarks.export",
    "eta": "benchmarks.eta",
    "memory": "benchmarks.memory",
}

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = ROOT / "docs" / "benchmarks.md"

PREAMBLE = """# Benchmarks

Measured by `make bench` (`python -m benchmarks.run [--only NAME] [--quick]`). Each `## section`
below is rewritten in place when its benchmark is re-run; the other sections keep their figures
and dates. Figures come from one machine at one time: compare runs on the same machine only.
"""


# -- running -----------------------------------------------------------------------------------


def run_section(name: str, quick: bool) -> Section:
    """Import the section's module, run it and stamp its wall-clock."""
    module = importlib.import_module(SECTIONS[name])
    start = time.perf_counter()
    section = module.run(quick)
    section.seconds = time.perf_counter() - start
    section.machine["load_end"] = load_average()
    if section.name != name:
        raise RuntimeError(f"section module {SECTIONS[name]} returned section {section.name!r}")
    return section


def selected(only: Sequence[str] | None) -> list[str]:
    """Section names to run, in registry order; unknown names raise SystemExit."""
    if not only:
        return list(SECTIONS)
    wanted = {name.strip() for item in only for name in item.split(",") if name.strip()}
    unknown = sorted(wanted - SECTIONS.keys())
    if unknown:
        raise SystemExit(f"unknown section(s): {', '.join(unknown)}; known: {', '.join(SECTIONS)}")
    return [name for name in SECTIONS if name in wanted]


# -- rendering ---------------------------------------------------------------------------------


def _status(ok: bool | None) -> str:
    return {True: "pass", False: "MISS", None: ""}[ok]


def table(section: Section) -> Table:
    """The section as a Rich table."""
    mode = "quick" if section.quick else "full"
    result = Table(
        title=f"{section.name} ({mode}, {section.seconds:.1f} s)",
        caption=section.summary,
        title_justify="left",
    )
    result.add_column("metric")
    result.add_column("value", justify="right")
    result.add_column("target", justify="right")
    result.add_column("status")
    for row in section.rows:
        style = {True: "green", False: "bold red", None: ""}[row.ok]
        result.add_row(row.metric, row.value, row.target, Text(_status(row.ok), style=style))
    return result


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown(section: Section) -> str:
    """The section's ``## name`` block, ending with one newline."""
    machine = section.machine
    lines = [
        f"## {section.name}",
        "",
        section.summary,
        "",
        f"- date: {section.date}; mode: {'quick' if section.quick else 'full'}; "
        f"section wall-clock: {section.seconds:.1f} s",
        f"- machine: {machine['cpus']} CPUs ({machine['cpu']}), {machine['os']}, "
        f"Python {machine['python']}, "
        f"torch {machine['torch']}, threads: {machine['threads']}, "
        f"load average (1/5/15 min) at start {machine['load']}, "
        f"at end {machine.get('load_end', 'unknown')}",
    ]
    if section.settings:
        settings = ", ".join(f"{key} {value}" for key, value in section.settings.items())
        lines.append(f"- settings: {settings}")
    lines += ["", "| metric | value | target | status |", "|---|---:|---:|---|"]
    lines += [
        f"| {_cell(r.metric)} | {_cell(r.value)} | {_cell(r.target)} | {_status(r.ok)} |"
        for r in section.rows
    ]
    if section.notes:
        lines += ["", *(f"- {note}" for note in section.notes)]
    return "\n".join(lines) + "\n"


def replace_block(document: str, name: str, block: str) -> str:
    """``document`` with its ``## name`` block replaced by ``block`` (appended if absent)."""
    lines = document.splitlines(keepends=True)
    heading = f"## {name}"
    start = next((i for i, line in enumerate(lines) if line.rstrip() == heading), None)
    if start is None:
        body = document.rstrip("\n")
        return f"{body}\n\n{block}" if body else block
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    after = "".join(lines[end:])
    return "".join(lines[:start]) + block + ("\n" + after if after else "")


def write_section(path: Path, section: Section) -> None:
    """Create ``path`` with the preamble if needed and put ``section``'s block in it."""
    document = path.read_text(encoding="utf-8") if path.exists() else PREAMBLE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(replace_block(document, section.name, markdown(section)), encoding="utf-8")


# -- command line ------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument(
        "--only", action="append", metavar="NAME", help=f"section(s): {', '.join(SECTIONS)}"
    )
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, faster")
    parser.add_argument(
        "--output", type=Path, default=DEFAULT_OUTPUT, help="markdown file to update"
    )
    parser.add_argument("--no-write", action="store_true", help="print tables only")
    parser.add_argument("--list", action="store_true", help="list sections and exit")
    args = parser.parse_args(argv)

    console = Console()
    if args.list:
        for name, module in SECTIONS.items():
            console.print(f"{name}\t{module}")
        return 0

    os.environ.setdefault("TQDM_DISABLE", "1")  # before tqdm is imported: no loading bars
    start = time.perf_counter()
    missed = []
    for name in selected(args.only):
        console.print(f"[bold]running {name}[/] ({'quick' if args.quick else 'full'}) ...")
        section = run_section(name, args.quick)
        console.print(table(section))
        if not args.no_write:
            write_section(args.output, section)
        missed += [f"{name}: {row.metric}" for row in section.missed]
    total = time.perf_counter() - start
    if not args.no_write:
        console.print(f"updated {args.output}")
    for item in missed:
        console.print(f"[bold red]target missed[/] {item}")
    console.print(f"total wall-clock {total:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
