"""Text corpora for perplexity: a file path, or the text bundled with the interpreter."""

from __future__ import annotations

from pathlib import Path

from frankensweep.core.errors import UserError

#: the offline default: Python's own help topics, shipped with every interpreter
BUNDLED = "pydoc_data.topics"
#: every name of the bundled text (the first is the canonical one)
BUNDLED_NAMES = (BUNDLED, "bundled", "pydoc")


def is_bundled(name: str) -> bool:
    """Whether ``name`` means the bundled text rather than a file."""
    return name in BUNDLED_NAMES


class CorpusError(UserError, ValueError):
    """A corpus could not be found or read; the message says what to change."""


def bundled_text() -> str:
    """The help-topic texts of ``pydoc_data.topics``, joined in key order."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


def load_corpus(spec: str) -> str:
    """Read a corpus: ``pydoc_data.topics`` (bundled) or a UTF-8 text file path."""
    if is_bundled(spec):
        return bundled_text()
    path = Path(spec).expanduser()
    if not path.is_file():
        raise CorpusError(
            f"corpus not found: {spec} (give a UTF-8 text file or {BUNDLED} for the bundled text)"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CorpusError(
            f"corpus {spec} is not UTF-8 text: {exc.reason} at byte {exc.start}"
        ) from exc
    if not text.strip():
        raise CorpusError(f"corpus {spec} is empty")
    return text
