"""A small HTTP client of the frankensweep API (used by the CLI and the demo)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from frankensweep.core.errors import UserError

DEFAULT_URL = "http://127.0.0.1:8000"


class ClientError(UserError, RuntimeError):
    """The server refused a request or could not be reached; the message says why."""


def _message(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:200]}"
    if isinstance(detail, list):
        parts = []
        for d in detail:
            loc = ".".join(str(x) for x in d.get("loc", []) if x != "body")
            parts.append(f"{loc}: {d.get('msg')}" if loc else str(d.get("msg")))
        return "; ".join(parts)
    return str(detail)


def default_url() -> str:
    """``FRANKENSWEEP_URL`` when set, else the local server."""
    return os.environ.get("FRANKENSWEEP_URL") or DEFAULT_URL


class Client:
    def __init__(
        self, url: str | None = None, token: str | None = None, timeout: float = 60
    ) -> None:
        url = url or default_url()
        token = token if token is not None else os.environ.get("FRANKENSWEEP_API_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def _call(self, method: str, path: str, **kwargs) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot reach {self.url}: {exc}") from None
        if response.status_code >= 400:
            raise ClientError(_message(response))
        return response

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/healthz").json()

    def submit(self, sweep: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/api/sweeps", json=sweep).json()

    def sweep(self, sweep_id: int) -> dict[str, Any]:
        return self._call("GET", f"/api/sweeps/{sweep_id}").json()

    def leaderboard(
        self, sweep_id: int, metric: str | None = None, limit: int = 100, offset: int = 0
    ) -> dict[str, Any]:
        """One page of the ranked board (``total`` says how many rows it has)."""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if metric:
            params["metric"] = metric
        return self._call("GET", f"/api/sweeps/{sweep_id}/leaderboard", params=params).json()

    def recipe(self, candidate_id: int, dtype: str = "bfloat16") -> str:
        path = f"/api/candidates/{candidate_id}/recipe.yaml"
        return self._call("GET", path, params={"dtype": dtype}).text

    def candidate(self, candidate_id: int) -> dict[str, Any]:
        return self._call("GET", f"/api/candidates/{candidate_id}").json()

    def download(
        self,
        path: str,
        dest: Path,
        progress: Callable[[int, int | None], None] | None = None,
    ) -> int:
        """Stream the body of ``GET path`` into the file ``dest``; return the bytes written.

        ``progress(done, total)`` is called per chunk (total: the Content-Length, if sent).
        """
        try:
            with self.http.stream("GET", path, timeout=None) as response:
                if response.status_code >= 400:
                    response.read()
                    raise ClientError(_message(response))
                length = response.headers.get("content-length")
                total = int(length) if length else None
                done = 0
                with dest.open("wb") as sink:
                    for chunk in response.iter_bytes(1 << 20):
                        sink.write(chunk)
                        done += len(chunk)
                        if progress:
                            progress(done, total)
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot download {path} from {self.url}: {exc}") from None
        if total is not None and done != total:
            raise ClientError(f"download of {path} ended after {done} of {total} bytes")
        return done

    def close(self) -> None:
        self.http.close()
