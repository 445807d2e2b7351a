"""Loopback helpers: free ports, loopback addresses, waiting for a server's health check."""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable

__all__ = ["free_port", "is_loopback", "wait_healthy"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port of ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine's loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def wait_healthy(
    url: str,
    timeout: float = 120.0,
    alive: Callable[[], bool] = lambda: True,
    every: float = 0.2,
) -> bool:
    """Poll ``GET {url}/healthz`` until it answers 200 (True), the server dies (``alive()``
    turns False) or ``timeout`` seconds pass (False both)."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        if not alive():
            return False
        time.sleep(every)
    return False
