"""Every error answered as {"error": "..."}: our own, FastAPI's validation, Starlette's 404/405."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from sandbox_api.limits import LimitExceeded
from sandbox_api.models import ErrorResponse

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error answered with `status` and `message`."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(ErrorResponse(error=message).model_dump(), status_code=status, headers=headers)


def describe_validation_error(error: RequestValidationError) -> str:
    """One sentence per problem, naming the field, e.g. `timeout_seconds: Input should be a valid integer`."""
    parts = []
    for problem in error.errors()[:5]:
        location = ".".join(str(part) for part in problem.get("loc", ()) if part != "body")
        message = problem.get("msg", "invalid")
        if problem.get("type") == "extra_forbidden":
            message = "unknown field"
        parts.append(f"{location}: {message}" if location else message)
    return "invalid request: " + "; ".join(parts)


ERROR_RESPONSES = {
    400: {"model": ErrorResponse, "description": "The request is invalid; `error` says what to change."},
    401: {"model": ErrorResponse, "description": "Missing or invalid API key."},
    413: {"model": ErrorResponse, "description": "The request body is too large."},
    429: {"model": ErrorResponse, "description": "Over the rate or concurrency limit; see `Retry-After`."},
    503: {"model": ErrorResponse, "description": "The sandbox backend is unavailable."},
}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, error: ApiError) -> JSONResponse:
        return error_response(error.status, error.message, error.headers)

    @app.exception_handler(LimitExceeded)
    async def _limit(request: Request, error: LimitExceeded) -> JSONResponse:
        return error_response(429, str(error), {"Retry-After": str(error.retry_after_s)})

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, error: RequestValidationError) -> JSONResponse:
        return error_response(400, describe_validation_error(error))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        message = error.detail if isinstance(error.detail, str) else "request failed"
        if error.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path}"
        return error_response(error.status_code, message, error.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal error; the server log has the details")
