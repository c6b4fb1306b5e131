"""What the routes share: configuration, backend, keys, limits and metrics of one app."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from sandbox_api.auth import KeyRing
from sandbox_api.backends.base import Backend
from sandbox_api.config import Settings
from sandbox_api.limits import Admission, RateLimiter
from sandbox_api.metrics import Metrics
from sandbox_api.shared_limits import SharedLimits
from sandbox_operator.catalogue import Catalogue


@dataclass
class AppState:
    settings: Settings
    catalogue: Catalogue
    backend: Backend
    keys: KeyRing
    rate: RateLimiter
    admission: Admission
    metrics: Metrics
    # Per-key limits shared by all replicas (kubernetes backend); None: the in-memory ones.
    shared_limits: SharedLimits | None = None
    # Tasks that release an execution's admission slot when it finishes.
    watchers: set[asyncio.Task] = field(default_factory=set)


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
