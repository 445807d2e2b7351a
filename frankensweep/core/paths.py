"""Where files named over the network may live: under the configured roots, or on the hub.

A name is a local file when it exists (symlinks included, even dangling ones), has a suffix its
loader always reads locally (``.gguf``, ``.json``), or belongs to a field with no hub form; it is
resolved (``~`` expanded, ``..`` and symlinks followed) and must land under one of
``Settings.roots()``. Any other name must be a hub id ``owner/name``. A name outside the roots gets
the same answer whether it exists or not, so the check reveals nothing of the rest of the disk.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from frankensweep.core.errors import UserError

__all__ = [
    "HUB_ID",
    "PathRefused",
    "check_file_or_hub",
    "check_name_length",
    "is_hub_id",
    "names_local_file",
    "resolve_under",
]

_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
#: ``owner/name``: letters, digits, ``.``, ``_``, ``-``; each part starts and ends with a letter
#: or digit, at most 96 characters; no ``..`` or ``--`` (as the hub itself requires)
HUB_ID = re.compile(rf"(?!.*(?:\.\.|--)){_PART}/{_PART}")


class PathRefused(UserError, ValueError):
    """A name is neither a file under the roots nor a hub id; the message says what to change."""


def is_hub_id(text: str) -> bool:
    """Whether ``text`` is a hub id ``owner/name`` under the strict pattern ``HUB_ID``."""
    return HUB_ID.fullmatch(text) is not None


#: longest file name and path the file systems here take (NAME_MAX, PATH_MAX of Linux)
NAME_MAX = 255
PATH_MAX = 4096


def check_name_length(text: str, what: str) -> None:
    """Raise ``PathRefused`` for a name no file system here can hold (the OS would answer
    ENAMETOOLONG at the first ``stat``)."""
    encoded = [part.encode("utf-8", "surrogateescape") for part in text.split("/")]
    if len(text.encode("utf-8", "surrogateescape")) > PATH_MAX or any(
        len(part) > NAME_MAX for part in encoded
    ):
        raise PathRefused(
            f"{what} name too long: a path is at most {PATH_MAX} bytes and each of its parts "
            f"at most {NAME_MAX}"
        )


def names_local_file(text: str, local_suffixes: tuple[str, ...] = ()) -> bool:
    """Whether ``text`` names a local file for sure: it exists (symlinks included, even dangling
    ones) or ends with a suffix its loader only reads locally. Otherwise a hub id (see
    :func:`is_hub_id`) names a hub repository, and anything else a local file that is missing."""
    try:
        exists = os.path.lexists(Path(text).expanduser())
    except (RuntimeError, ValueError):  # ~unknown-user, NUL byte
        exists = False
    return exists or text.lower().endswith(local_suffixes)


def resolve_under(text: str, roots: Sequence[Path]) -> Path | None:
    """The real path of ``text`` (``~`` expanded, ``..`` and symlinks resolved) if it lies under
    one of ``roots`` (resolved directories), else None."""
    try:
        path = Path(text).expanduser().resolve()
    except (OSError, RuntimeError, ValueError):  # ~unknown-user, symlink loop, NUL byte
        return None
    return path if any(path.is_relative_to(root) for root in roots) else None


def check_file_or_hub(
    text: str,
    roots: Sequence[Path],
    what: str,
    *,
    hub_ok: bool,
    local_suffixes: tuple[str, ...] = (),
) -> None:
    """Raise ``PathRefused`` unless ``text`` names a file under ``roots`` or (``hub_ok``) is a
    hub id. A missing local file (module docstring) under the roots passes: the loaders report
    it by name."""
    check_name_length(text, what)
    local = not hub_ok or names_local_file(text, local_suffixes)
    if local and resolve_under(text, roots) is not None:
        return
    if not local and is_hub_id(text):
        return
    where = ", ".join(str(r) for r in roots) or "(none)"
    hub = " nor a hub id like owner/name" if hub_ok else ""
    raise PathRefused(
        f"{what} not found: {text} is not a file under the allowed roots ({where}){hub}; "
        "put the file under a root (FRANKENSWEEP_PATH_ROOTS lists them, colon-separated)"
    )
