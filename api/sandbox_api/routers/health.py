"""Liveness, readiness and Prometheus metrics (no key needed)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sandbox_api.models import HealthStatus
from sandbox_api.state import State

router = APIRouter(tags=["health"])


@router.get("/healthz", operation_id="health", response_model=HealthStatus)
async def health() -> HealthStatus:
    """The process is up and answering."""
    return HealthStatus(status="ok")


@router.get(
    "/readyz",
    operation_id="ready",
    response_model=HealthStatus,
    responses={503: {"model": HealthStatus, "description": "The backend cannot run executions."}},
)
async def ready(state: State) -> HealthStatus | JSONResponse:
    """The backend can run executions; says what the sandbox enforces."""
    is_ready, detail = await state.backend.ready()
    status = HealthStatus(status="ok" if is_ready else "unavailable", backend=state.backend.name, detail=detail)
    return status if is_ready else JSONResponse(status.model_dump(), status_code=503)


@router.get(
    "/metrics",
    operation_id="metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text format."}},
)
async def metrics(state: State) -> Response:
    """Prometheus metrics."""
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
