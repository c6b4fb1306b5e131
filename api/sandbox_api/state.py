"""What the routes share: configuration, backend, keys, limits and metrics of one app."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from sandbox_api.auth import KeyRing
from sandbox_api.backends.base import Backend
from sandbox_api.config import Settings
from sandbox_api.limits import Limits
from sandbox_api.metrics import Metrics
from sandbox_api.service import ExecutionService
from sandbox_contract.catalogue import Catalogue


@dataclass(frozen=True)
class AppState:
    settings: Settings
    catalogue: Catalogue
    backend: Backend
    keys: KeyRing
    # Per-key rate and concurrency: in memory, or in the cluster for every replica (the backend's choice).
    limits: Limits
    metrics: Metrics
    service: ExecutionService


def get_state(request: Request) -> AppState:
    return request.app.state.sandbox


State = Annotated[AppState, Depends(get_state)]

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer sbx_...`")
# Where sandbox_api.guard leaves the tenant it authenticated, in the request's scope state.
TENANT_SCOPE_KEY = "sandbox_tenant"


async def authenticated_tenant(
    request: Request, _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> str:
    """The tenant of the request's key. The guard (sandbox_api.guard) checked the key and its rate
    before the body was read; `_credentials` only declares the scheme in the OpenAPI document."""
    return request.scope["state"][TENANT_SCOPE_KEY]


Tenant = Annotated[str, Depends(authenticated_tenant)]
