"""Request body limits, as a pure ASGI middleware (answered before the app sees the body).

- Size: counted on the body stream itself, so a client cannot get past it by omitting or
  understating Content-Length (chunked transfer); an overstated Content-Length is refused before
  reading (413).
- Time: the whole body must arrive within ``read_timeout`` seconds of the request's start, so a
  client trickling its body a byte at a time cannot hold a connection and a request slot (408).

The body (at most the limit) is read ahead and handed to the app in one message.
"""

from __future__ import annotations

import asyncio
import json
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BodyLimits", "refuse"]


async def refuse(send: Send, status: int, detail: str, close: bool = True) -> None:
    """Answer ``{"detail": ...}`` with ``status`` (FastAPI's error shape, compact JSON)."""
    content = json.dumps({"detail": detail}, separators=(",", ":")).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(content)).encode()),
    ]
    if close:
        headers.append((b"connection", b"close"))  # the rest of the body is never read
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content})


class BodyLimits:
    """Answer 413 to a body over ``max_bytes``, 408 to one slower than ``read_timeout``."""

    def __init__(self, app: ASGIApp, max_bytes: int, read_timeout: float = 30.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.read_timeout = read_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _content_length(scope) > self.max_bytes:
            await self._too_large(send)
            return
        chunks: list[bytes] = []
        size = 0
        deadline = time.monotonic() + self.read_timeout
        while True:
            try:
                message = await asyncio.wait_for(receive(), deadline - time.monotonic())
            except TimeoutError:
                await refuse(
                    send,
                    408,
                    f"the request body did not arrive within {self.read_timeout:g} s "
                    "(FRANKENSWEEP_READ_TIMEOUT)",
                )
                return
            if message["type"] != "http.request":  # the client left: let the app see it
                await self.app(scope, _replay([message], receive), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([body], receive), send)

    async def _too_large(self, send: Send) -> None:
        await refuse(
            send,
            413,
            f"request body over {self.max_bytes} bytes (FRANKENSWEEP_MAX_REQUEST_BYTES): "
            "send a smaller sweep (fewer explicit plans or recipes), or raise the limit",
        )


def _content_length(scope: Scope) -> int:
    """The declared Content-Length, 0 when absent or unreadable (the stream is counted anyway)."""
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A ``receive`` giving ``messages`` first, then the client's own."""
    pending = list(messages)

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return replay
