"""Waiting for a process the tests started to serve HTTP."""

from __future__ import annotations

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
