"""What identifies a base model's weights for stored scores: a digest of its files' content.

- a ``.gguf`` file: :func:`~frankensweep.core.fingerprint.sampled_digest` of the file;
- a Hugging Face directory: a digest over every file in it (configs, tokenizer, weights; hidden
  files and Markdown left out), each by name, size and sampled digest;
- a hub id: ``hub:owner/name@<commit>``, the commit the local cache's ``main`` points to, or the
  hub's current one when it can be reached (a worker downloading the model gets that commit).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from frankensweep.core.errors import first_line
from frankensweep.core.fingerprint import sampled_digest
from frankensweep.models.spec import ModelLoadError, is_gguf, resolve_spec

__all__ = ["model_fingerprint"]


def _directory_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or path.suffix.lower() == ".md":
            continue
        digest.update(f"{rel.as_posix()}\0{path.stat().st_size}\0{sampled_digest(path)}\n".encode())
    return f"dir-sha256:{digest.hexdigest()}"


def _hub_revision(repo_id: str) -> str:
    """The commit of ``repo_id`` this machine would load: its cached ``main``, else the hub's."""
    from huggingface_hub import constants, model_info

    ref = Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}" / "refs" / "main"
    if ref.is_file():
        return ref.read_text().strip()
    try:
        sha = model_info(repo_id).sha
    except Exception as exc:  # offline, unknown repository, gated: the hub says why
        raise ModelLoadError(
            f"cannot identify {repo_id} on the hub: {first_line(exc, type(exc).__name__)}"
        ) from None
    if not sha:
        raise ModelLoadError(f"the hub gives no commit for {repo_id}")
    return sha


def model_fingerprint(spec: str) -> str:
    """A digest that changes whenever the named model's weights, config or tokenizer change."""
    location, _kwargs = resolve_spec(spec)
    path = Path(spec).expanduser()
    try:
        if is_gguf(spec):
            return sampled_digest(path)
        if Path(location).is_dir():
            return _directory_digest(Path(location))
    except OSError as exc:
        raise ModelLoadError(f"cannot read {spec}: {first_line(exc)}") from None
    return f"hub:{location}@{_hub_revision(location)}"
