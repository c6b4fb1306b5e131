"""POST /api/sandbox/execute and GET /api/sandbox/executions/{id}."""

from __future__ import annotations

import asyncio
import logging
import time

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from sandbox_api.backends.base import BackendError, Execution, new_execution_id
from sandbox_api.errors import ERROR_RESPONSES, ApiError
from sandbox_api.models import (
    EncodedFile,
    ErrorResponse,
    ExecuteRequest,
    ExecutionAccepted,
    ExecutionResult,
)
from sandbox_api.shared_limits import SharedLimitsError
from sandbox_api.state import AppState, State, Tenant
from sandbox_operator.outcomes import STATUS_BUDGET_BYTES, stored_size
from sandbox_operator.runner_spec import InputFile, InvalidSpecError, normalise_input_files

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/sandbox", tags=["executions"])

# How long past its own timeout a waiting request waits for a result before answering 202:
# room for the sandbox (or pod) to start and report.
WAIT_GRACE_SECONDS = 30
# A watcher gives up on an execution that never finishes (the backend guarantees it does) after this.
WATCH_LIMIT_SECONDS = 3600
# The code, stdin and files as a SandboxExecution's spec stores them, at most: with its status (cut
# to STATUS_BUDGET_BYTES by the operator) and metadata, the object stays under etcd's 1.5 MiB. The
# same bound on both backends, so a request means the same everywhere.
MAX_STORED_REQUEST_BYTES = 1536 * 1024 - STATUS_BUDGET_BYTES - 128 * 1024


def _require_text(name: str, value: str | None) -> None:
    """Lone surrogates survive JSON decoding but cannot be written as UTF-8: refuse them here."""
    if value is not None:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(400, f"{name} is not valid Unicode text (lone surrogate)") from None


def build_execution(state: AppState, request: ExecuteRequest, tenant: str) -> Execution:
    """A validated, fully resolved execution; ApiError(400) says what to change."""
    language = state.catalogue.find(request.language)
    offered = {info.name for info in state.backend.languages()}
    if language is None or language.name not in offered:
        raise ApiError(400, f"Unsupported language: {request.language!r} (supported: {', '.join(sorted(offered))})")
    _require_text("code", request.code)
    _require_text("input_data", request.input_data)
    files = []
    for path, value in (request.files or {}).items():
        encoded = value if isinstance(value, EncodedFile) else EncodedFile(content=value)
        _require_text(f"file name {path[:80]!r}", path)
        _require_text(f"file {path[:80]!r}", encoded.content)
        files.append(InputFile(path=path, content=encoded.content, encoding=encoded.encoding))
    try:
        timeout, memory = state.settings.limits().resolve(request.timeout_seconds, request.max_memory_mb)
        normalised = normalise_input_files(files, main_file=language.main_file)
    except InvalidSpecError as error:
        raise ApiError(400, str(error)) from None
    stored = stored_size([request.code, request.input_data, [(f.path, f.content) for f in normalised]])
    if stored > MAX_STORED_REQUEST_BYTES:
        raise ApiError(413, f"the code, input and files take {stored} bytes once stored (each <, > and & counts "
                            f"6 bytes); at most {MAX_STORED_REQUEST_BYTES} are accepted")
    return Execution(
        id=new_execution_id(),
        tenant=tenant,
        language=language.name,
        code=request.code,
        stdin=request.input_data,
        files=tuple(normalised),
        timeout_seconds=timeout,
        max_memory_mb=memory,
    )


async def _watch_until_finished(state: AppState, execution: Execution, submitted: float) -> None:
    """Release the execution's admission slot and record its metrics once it ends."""
    result = None
    try:
        deadline = time.monotonic() + WATCH_LIMIT_SECONDS
        while time.monotonic() < deadline:
            try:
                result = await state.backend.wait(execution.id, execution.tenant, 60)
            except BackendError:
                await asyncio.sleep(1)  # the backend is briefly unreachable; the execution goes on
                continue
            if result is None or result.finished:
                break
    finally:
        state.admission.release(execution.tenant)
        state.metrics.in_flight.dec()
        status = result.status if result is not None and result.finished else "unknown"
        state.metrics.executions.labels(execution.language, status).inc()
        state.metrics.duration.labels(execution.language).observe(time.monotonic() - submitted)


@router.post(
    "/execute",
    operation_id="execute_code",
    response_model=ExecutionResult,
    responses={202: {"model": ExecutionAccepted, "description": "Accepted without waiting (`wait: false`), or still running after the wait."}, **ERROR_RESPONSES},
)
async def execute_code(request: ExecuteRequest, state: State, tenant: Tenant) -> ExecutionResult | JSONResponse:
    """Run code in a sandbox; waits for the result unless `wait` is false."""
    execution = build_execution(state, request, tenant)
    if state.shared_limits is not None:
        try:
            await state.shared_limits.admit(tenant, execution.id)
        except SharedLimitsError as error:
            raise ApiError(503, f"the concurrency limit cannot be checked: {error}") from None
    state.admission.admit(tenant)
    try:
        await state.backend.submit(execution)
    except BackendError as error:
        state.admission.release(tenant)
        raise ApiError(503, f"the sandbox backend cannot take work: {error}") from None
    state.metrics.in_flight.inc()
    watcher = asyncio.create_task(_watch_until_finished(state, execution, time.monotonic()))
    state.watchers.add(watcher)
    watcher.add_done_callback(state.watchers.discard)
    status = "pending"
    if request.wait:
        try:
            result = await state.backend.wait(execution.id, tenant, execution.timeout_seconds + WAIT_GRACE_SECONDS)
        except BackendError as error:
            # The execution was accepted and goes on: answer with its id so the client can poll.
            log.warning("waiting for %s failed: %s", execution.id, error)
            result = None
        if result is not None and result.finished:
            return result
        status = result.status if result is not None else status
    accepted = ExecutionAccepted(execution_id=execution.id, status=status)
    return JSONResponse(accepted.model_dump(), status_code=202)


@router.get(
    "/executions/{execution_id}",
    operation_id="get_execution",
    response_model=ExecutionResult,
    responses={404: {"model": ErrorResponse, "description": "No such execution for this key."}, **ERROR_RESPONSES},
)
async def get_execution(execution_id: str, state: State, tenant: Tenant) -> ExecutionResult:
    """The result of an execution, or its state while it runs."""
    try:
        result = await state.backend.get(execution_id, tenant)
    except BackendError as error:
        raise ApiError(503, f"the sandbox backend is unavailable: {error}") from None
    if result is None:
        raise ApiError(404, f"no execution {execution_id[:64]!r} for this API key (unknown, expired, or not yours)")
    return result
