"""uvicorn's h11 protocol with a deadline on a request's headers.

uvicorn closes a connection idle between requests (`timeout_keep_alive`) but has no bound on the
time a client takes to send a request's headers: a client sending one byte a second, or connecting
and sending nothing, holds its connection for ever. Here the clock starts when the connection opens
or the next request's first byte arrives, stops once h11 has the whole request head, and at the
deadline the connection is closed and counted. The body's deadline is sandbox_api.guard's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


def header_deadline_protocol(timeout_s: float, on_timeout: Callable[[], None]) -> type[asyncio.Protocol]:
    """The protocol class for `uvicorn.run(http=...)`; `on_timeout` is called for each connection cut off."""

    class HeaderDeadlineProtocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._header_timer = self.loop.call_later(timeout_s, self._headers_overdue)

        def data_received(self, data: bytes) -> None:
            if self._header_timer is None and self.conn.their_state is h11.IDLE:
                self._header_timer = self.loop.call_later(timeout_s, self._headers_overdue)
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self._stop_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_header_timer()
            super().connection_lost(exc)

        def _stop_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_overdue(self) -> None:
            self._header_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                on_timeout()
                self.transport.close()

    return HeaderDeadlineProtocol
