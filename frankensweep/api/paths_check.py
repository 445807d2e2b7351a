"""The files a submitted sweep names (model, eval data) must live under the path roots.

Only the API applies this check; the command line reads whatever local files it is given.
"""

from __future__ import annotations

from frankensweep.api.schemas import SweepCreate
from frankensweep.core.config import Settings
from frankensweep.core.paths import PathRefused, check_file_or_hub
from frankensweep.evals.corpus import BUNDLED
from frankensweep.evals.registry import EqBenchSpec, PerplexitySpec, PreferenceSpec

#: corpus names ``load_corpus`` reads from the interpreter, not from a file
_BUILT_IN_CORPORA = (BUNDLED, "bundled", "pydoc")


def _fields(payload: SweepCreate):
    """``(loc, name, what, hub_ok, local_suffixes)`` of every file name in the submission."""
    yield ("body", "model"), payload.model, "model file", True, (".gguf",)
    for i, spec in enumerate(payload.evals):
        if isinstance(spec, PerplexitySpec) and spec.corpus not in _BUILT_IN_CORPORA:
            yield ("body", "evals", i, "corpus"), spec.corpus, "corpus", False, ()
        elif isinstance(spec, EqBenchSpec):
            yield ("body", "evals", i, "questions"), spec.questions, "questions", True, (".json",)
        elif isinstance(spec, PreferenceSpec) and isinstance(spec.prompts, str):
            yield ("body", "evals", i, "prompts"), spec.prompts, "prompts file", False, ()


def check_paths(payload: SweepCreate, settings: Settings) -> None:
    """Raise ``SubmissionError`` naming the first file outside ``settings.roots()``."""
    from frankensweep.api.submission import SubmissionError  # submission imports this module

    roots = settings.roots()
    for loc, name, what, hub_ok, suffixes in _fields(payload):
        try:
            check_file_or_hub(name, roots, what, hub_ok=hub_ok, local_suffixes=suffixes)
        except PathRefused as exc:
            raise SubmissionError(loc, str(exc)) from None
