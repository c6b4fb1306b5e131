"""Serving helpers for the tests: a free local port, and waiting for a started process to serve HTTP."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable

import httpx


def wait_until_serving(process: subprocess.Popen, url: str, *, what: str, log: Callable[[], str], timeout: float) -> None:
    """Return once `url` answers 200; fail with the tail of `log()` if `process` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, f"{what} exited:\n{log()[-3000:]}"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{what} did not get ready:\n{log()[-3000:]}"
        time.sleep(0.1)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
