"""The one base class of errors the user must fix, and how an exception reads in one line.

Every error whose message says what to change (a bad plan, a missing file, an impossible space,
a model that cannot be loaded, a refused submission) derives from :class:`UserError`. The command
line prints it as one ``error:`` line and exits with code 2; the API answers it with a 4xx.
"""

from __future__ import annotations

__all__ = ["UserError", "first_line", "one_line"]


class UserError(Exception):
    """Something the user must change; the message names it and says what to do."""


def first_line(exc: BaseException, default: str = "") -> str:
    """The first non-blank line of ``str(exc)`` (libraries append tracebacks and hints)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else default


def one_line(exc: BaseException) -> str:
    """``TypeName: first line`` of an exception, for failure reasons stored with candidates."""
    return f"{type(exc).__name__}: {first_line(exc)}".strip()
