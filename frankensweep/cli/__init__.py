"""The ``frankensweep`` command line (Typer + Rich).

``local`` holds the commands that work on a model directly (plans, eval, export, convert);
``service`` those of the service (serve, worker, migrate, submit, leaderboard, demo); ``prior``
the layer prior of a model.
"""

from __future__ import annotations

import sys

from frankensweep.cli import local, prior, service  # noqa: F401  (they register commands)
from frankensweep.cli.app import app, err
from frankensweep.core.errors import UserError

__all__ = ["app", "main"]


def main() -> None:
    """Entry point: user errors print one line and exit with code 2 (as usage errors do)."""
    try:
        app()
    except UserError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
