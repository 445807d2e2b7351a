"""Content fingerprints of the files a result depends on, so a rewritten file is never mistaken
for the one an old score was computed on.

- :func:`file_digest`: SHA-256 of a whole file. Used for eval data (corpora, question sets, prompt
  files): small, so exactness costs little.
- :func:`sampled_digest`: SHA-256 of a file's size and of 16 blocks of 1 MiB spread evenly over it
  (first and last included); a file under 16 MiB is hashed whole. Used for model weights: a
  rewritten checkpoint changes its size or the sampled bytes (a re-quantization, a fine-tune or a
  different file rewrite every block), while hashing 40-140 GB in full would make a submission
  take minutes.

Both are kept per process, keyed by (real path, size, mtime in ns, inode): a file is read again
only when one of those changes. Neither includes the path or the mtime in the digest itself, so
the same content under another name, or touched, keeps its fingerprint (and its stored scores).
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

__all__ = ["BLOCK", "SAMPLES", "file_digest", "sampled_digest"]

#: blocks read by :func:`sampled_digest`, and their size
SAMPLES = 16
BLOCK = 1 << 20
_CHUNK = 1 << 20

_cache: dict[tuple[str, str, int, int, int], str] = {}
_lock = threading.Lock()


def _stat_key(kind: str, path: Path) -> tuple[str, str, int, int, int]:
    real = path.resolve()
    st = real.stat()
    return (kind, str(real), st.st_size, st.st_mtime_ns, st.st_ino)


def _cached(kind: str, path: Path, compute) -> str:
    key = _stat_key(kind, path)
    with _lock:
        found = _cache.get(key)
    if found is None:
        found = compute(Path(key[1]), key[2])
        with _lock:
            _cache[key] = found
    return found


def _whole(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def _sampled(path: Path, size: int) -> str:
    if size <= SAMPLES * BLOCK:
        return _whole(path, size)
    digest = hashlib.sha256(f"{size}:".encode())
    step = (size - BLOCK) // (SAMPLES - 1)
    with path.open("rb") as f:
        for i in range(SAMPLES):
            f.seek(i * step)
            digest.update(f.read(BLOCK))
    return f"sampled-sha256:{digest.hexdigest()}"


def file_digest(path: str | os.PathLike[str]) -> str:
    """``sha256:<hex>`` of the file's whole content (raises OSError if it cannot be read)."""
    return _cached("whole", Path(path).expanduser(), _whole)


def sampled_digest(path: str | os.PathLike[str]) -> str:
    """A digest of the file's size and 16 sampled blocks (whole content under 16 MiB)."""
    return _cached("sampled", Path(path).expanduser(), _sampled)
