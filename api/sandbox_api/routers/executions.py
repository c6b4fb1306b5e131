"""POST /api/sandbox/execute and GET /api/sandbox/executions/{id}: HTTP over sandbox_api.service."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from sandbox_api.errors import ERROR_RESPONSES
from sandbox_api.models import ErrorResponse, ExecuteRequest, ExecutionAccepted, ExecutionResult
from sandbox_api.state import State, Tenant

router = APIRouter(prefix="/api/sandbox", tags=["executions"])


@router.post(
    "/execute",
    operation_id="execute_code",
    response_model=ExecutionResult,
    responses={202: {"model": ExecutionAccepted, "description": "Accepted without waiting (`wait: false`), or still running after the wait."}, **ERROR_RESPONSES},
)
async def execute_code(request: ExecuteRequest, state: State, tenant: Tenant) -> ExecutionResult | JSONResponse:
    """Run code in a sandbox; waits for the result unless `wait` is false."""
    outcome = await state.service.execute(request, tenant)
    if isinstance(outcome, ExecutionAccepted):
        return JSONResponse(outcome.model_dump(mode="json"), status_code=202)
    return outcome


@router.get(
    "/executions/{execution_id}",
    operation_id="get_execution",
    response_model=ExecutionResult,
    responses={404: {"model": ErrorResponse, "description": "No such execution for this key."}, **ERROR_RESPONSES},
)
async def get_execution(execution_id: str, state: State, tenant: Tenant) -> ExecutionResult:
    """The result of an execution, or its state while it runs."""
    return await state.service.get(execution_id, tenant)
