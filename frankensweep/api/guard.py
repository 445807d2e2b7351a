"""Who may talk to the API: a Host allowlist for every request, an Origin check on writes.

- **Host** (DNS rebinding): a page on ``evil.example`` whose name the attacker re-points to
  127.0.0.1 reaches a loopback server with ``Host: evil.example``. Unless the host is trusted
  (``Settings.host_allowlist``: the loopback names by default when no token is set) the answer is
  400, for reads and writes alike.
- **Origin** (cross-site writes): a form on another site can POST to the API (a ``cancel`` needs
  no body). A write whose ``Origin`` is neither the API's own (the scheme and ``Host`` it was
  reached by) nor listed in ``FRANKENSWEEP_ALLOWED_ORIGINS`` gets 403; so does one a browser marks
  ``Sec-Fetch-Site: cross-site``. Clients that are not browsers send no Origin and pass.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from frankensweep.api.limits import refuse

__all__ = ["RequestGuard"]

#: methods that change something (everything else must be safe to repeat and to forge)
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def _host_name(host: str) -> str:
    """``Host`` without its port (``[::1]:8000`` -> ``::1``), lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


class RequestGuard:
    """Refuse untrusted Host headers (400) and cross-origin writes (403)."""

    def __init__(self, app: ASGIApp, hosts: list[str] | None, origins: list[str]) -> None:
        self.app = app
        self.hosts = None if hosts is None else {h.lower() for h in hosts}
        self.origins = {o.lower() for o in origins}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = _header(scope, b"host") or ""
        if self.hosts is not None and _host_name(host) not in self.hosts:
            await refuse(
                send,
                400,
                f"host {host!r} is not trusted: reach the API by a trusted name, or add this "
                "one to FRANKENSWEEP_TRUSTED_HOSTS",
            )
            return
        if scope["method"] in WRITES and not self._same_site(scope, host):
            await refuse(
                send,
                403,
                "cross-origin write refused: send it from the dashboard itself, or add the "
                "origin to FRANKENSWEEP_ALLOWED_ORIGINS",
            )
            return
        await self.app(scope, receive, send)

    def _same_site(self, scope: Scope, host: str) -> bool:
        origin = _header(scope, b"origin")
        if origin is None:
            return (_header(scope, b"sec-fetch-site") or "").lower() != "cross-site"
        origin = origin.strip().rstrip("/").lower()
        own = f"{scope.get('scheme', 'http')}://{host.strip().lower()}"
        return origin == own or origin in self.origins
