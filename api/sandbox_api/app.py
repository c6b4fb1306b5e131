"""The FastAPI application factory: wires settings, keys, limits, backend and routers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandbox_api.auth import KeyRing
from sandbox_api.backends import create_backend
from sandbox_api.backends.base import Backend
from sandbox_api.config import Settings
from sandbox_api.errors import install_error_handlers
from sandbox_api.guard import RequestGuard
from sandbox_api.metrics import Metrics
from sandbox_api.openapi import install_openapi
from sandbox_api.routers import executions, health, languages
from sandbox_api.service import ExecutionService
from sandbox_api.state import AppState
from sandbox_contract.catalogue import load_catalogue

log = logging.getLogger(__name__)
KNOWN_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


class RequestMetricsMiddleware:
    """Counts answered requests by method, route template and status."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"] if scope["method"] in KNOWN_METHODS else "other"
            self.metrics.requests.labels(method, route, str(status)).inc()


def create_app(settings: Settings, *, keys: KeyRing, backend: Backend | None = None) -> FastAPI:
    """The app; `backend` defaults to the one the settings choose."""
    catalogue = load_catalogue(settings.languages_file or None)
    metrics = Metrics()
    backend = backend or create_backend(settings, catalogue)
    limits = backend.create_limits(settings)
    metrics.in_flight.set_function(lambda: limits.in_flight)
    state = AppState(
        settings=settings,
        catalogue=catalogue,
        backend=backend,
        keys=keys,
        limits=limits,
        metrics=metrics,
        service=ExecutionService(
            catalogue=catalogue, limits=settings.limits, backend=backend, key_limits=limits, metrics=metrics
        ),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await state.backend.start()
        await state.limits.start()
        yield
        await state.service.stop()
        await state.limits.stop()
        await state.backend.stop()

    app = FastAPI(
        title="Code execution sandbox",
        version="0.1.0",
        description="Run untrusted code in a locked-down sandbox. Authenticate with `Authorization: Bearer <key>`.",
        lifespan=lifespan,
    )
    app.state.sandbox = state
    install_error_handlers(app)
    for router in (executions.router, languages.router, health.router):
        app.include_router(router)
    install_openapi(app, state)
    # Outermost first: count every request, then check the key, its rate and the body before any parsing.
    app.add_middleware(RequestGuard, state=state)
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    return app
