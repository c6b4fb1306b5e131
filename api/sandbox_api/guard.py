"""Who is calling, and what they may send, decided before any handler parses anything.

`RequestGuard` is the ASGI middleware in front of the routes. For the API's own paths it checks the
key and its rate limit from the headers alone, so a request without a valid key is 401 whatever its
body. Then it reads the body under a size cap and a deadline (408 beyond, counted in
`sandbox_slow_clients_total`). Every early answer (401, 413, 429, ...) first reads and drops what the
client is still sending, up to DISCARD_BYTES, so that a client sending its whole body before it
reads gets its answer; the connection is never closed for a refused body (a close with unread data
resets it, and a reset kills a proxy or `kubectl port-forward` in between): uvicorn drops the rest,
under sandbox_api.protocol's deadline. A body declared larger than DISCARD_BYTES, or held back for
`100 Continue`, is answered at once.
"""

from __future__ import annotations

import asyncio

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandbox_api.auth import ANONYMOUS_TENANT
from sandbox_api.errors import error_response
from sandbox_api.limits import LimitExceeded, LimitsUnavailable
from sandbox_api.state import TENANT_SCOPE_KEY, AppState

# Paths that need a key; health, metrics and the OpenAPI document do not.
PROTECTED_PREFIX = "/api/sandbox/"
# What an early answer reads (and drops) of a body before answering; the rest is dropped after it.
DISCARD_BYTES = 4 * 1024 * 1024
UNAUTHENTICATED = {"WWW-Authenticate": "Bearer"}


class ClientGone(Exception):
    """The client disconnected before its body was in."""


class RequestGuard:
    def __init__(self, app: ASGIApp, *, state: AppState):
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        settings = self.state.settings
        headers = dict(scope["headers"])
        refusal = await self._authenticate(scope, headers) if scope["path"].startswith(PROTECTED_PREFIX) else None
        declared = headers.get(b"content-length")
        declared_size = int(declared) if declared is not None and declared.isdigit() else None
        if declared is not None and (declared_size is None or declared_size > settings.max_body_bytes):
            refusal = refusal or self._too_large()
        if refusal is not None and (headers.get(b"expect", b"").lower() == b"100-continue"
                                    or declared is not None and (declared_size or 0) > DISCARD_BYTES):
            await refusal(scope, receive, send)  # reading would ask for, or wait through, a refused body
            return
        try:
            async with asyncio.timeout(settings.body_timeout_seconds):
                body = await self._read_body(receive)
        except TimeoutError:
            self.state.metrics.slow_clients.labels("body").inc()
            message = f"the request body did not arrive within {settings.body_timeout_seconds} s"
            answer = refusal or error_response(408, message)
            answer.headers["Connection"] = "close"  # the slow client is cut off
            await answer(scope, receive, send)
            return
        except ClientGone:
            return
        if refusal is None and body is None:
            refusal = self._too_large()
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _authenticate(self, scope: Scope, headers: dict[bytes, bytes]) -> Response | None:
        """None when the key is valid and within its rate (the tenant is left in the scope), else the answer."""
        state = self.state
        if state.settings.insecure_no_auth:
            tenant = ANONYMOUS_TENANT
        else:
            scheme, _, key = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
            if scheme.lower() != "bearer" or not key.strip():
                return error_response(401, "missing API key: send `Authorization: Bearer <key>`", UNAUTHENTICATED)
            tenant = state.keys.tenant_for(key.strip())
            if tenant is None:
                return error_response(401, "invalid API key", UNAUTHENTICATED)
        try:
            await state.limits.check_rate(tenant)
        except LimitExceeded as error:
            return error_response(429, str(error), {"Retry-After": str(error.retry_after_s)})
        except LimitsUnavailable as error:
            return error_response(503, f"the rate limit cannot be checked: {error}")
        scope.setdefault("state", {})[TENANT_SCOPE_KEY] = tenant
        return None

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The body, or None when over the cap (then read on and dropped up to DISCARD_BYTES).

        Raises ClientGone.
        """
        chunks: list[bytes] = []
        size, limit = 0, self.state.settings.max_body_bytes
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size <= limit:
                chunks.append(chunk)
            else:
                chunks.clear()
            if not message.get("more_body", False):
                return b"".join(chunks) if size <= limit else None
            if size > DISCARD_BYTES:
                return None

    def _too_large(self) -> Response:
        return error_response(413, f"request body larger than {self.state.settings.max_body_bytes} bytes")
