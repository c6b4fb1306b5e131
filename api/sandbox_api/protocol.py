"""uvicorn's h11 protocol with deadlines on what uvicorn itself reads without bound.

uvicorn closes a connection idle between requests (`timeout_keep_alive`) but has no bound on the
time a client takes to send a request's head: a client sending one byte a second, or connecting
and sending nothing, holds its connection for ever. Nor on the rest of a body the app answered
without reading to its end (an early 401 or 413): uvicorn reads and drops it, which keeps the
connection usable (closing with unread data would reset it, and a reset kills a
`kubectl port-forward`), but a client may trickle it for ever.

So: the head must be in within `header_timeout_s` of the connection opening or the next request's
first byte, and the rest of an answered body within `body_timeout_s` of the answer; at a deadline
the connection is closed and `on_timeout(phase)` called ("headers" or "body"). The deadline on a
body the app reads is sandbox_api.guard's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


def deadline_protocol(
    *, header_timeout_s: float, body_timeout_s: float, on_timeout: Callable[[str], None]
) -> type[asyncio.Protocol]:
    """The protocol class for `uvicorn.run(http=...)`."""
    # What the client is still sending in each phase: the phase ends when h11 leaves that state.
    awaited = {"headers": h11.IDLE, "body": h11.SEND_BODY}

    class DeadlineProtocol(H11Protocol):
        _timer: asyncio.TimerHandle | None = None
        _phase = "headers"

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._start("headers", header_timeout_s)

        def data_received(self, data: bytes) -> None:
            if self._timer is None and self.conn.their_state is h11.IDLE:
                self._start("headers", header_timeout_s)
            super().data_received(data)
            if self._timer is not None and self.conn.their_state is not awaited[self._phase]:
                self._stop()
                if self.conn.their_state is h11.IDLE:  # a dropped body ended: the next head is due
                    self._start("headers", header_timeout_s)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self.conn.their_state is h11.SEND_BODY and not self.transport.is_closing():
                self._stop()
                self._start("body", body_timeout_s)

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop()
            super().connection_lost(exc)

        def _start(self, phase: str, timeout_s: float) -> None:
            self._phase = phase
            self._timer = self.loop.call_later(timeout_s, self._expired)

        def _stop(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _expired(self) -> None:
            self._timer = None
            if self.conn.their_state is awaited[self._phase] and not self.transport.is_closing():
                on_timeout(self._phase)
                self.transport.close()

    return DeadlineProtocol
