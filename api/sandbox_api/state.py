"""What the routes share: configuration, backend, keys, limits and metrics of one app."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from sandbox_api.auth import ANONYMOUS_TENANT, KeyRing
from sandbox_api.backends.base import Backend
from sandbox_api.config import Settings
from sandbox_api.errors import ApiError
from sandbox_api.limits import Admission, RateLimiter
from sandbox_api.metrics import Metrics
from sandbox_api.shared_limits import SharedLimits, SharedLimitsError
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


async def authenticated_tenant(
    state: State, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> str:
    """The tenant owning the presented key (401 without a valid one), after its rate limit."""
    if state.settings.insecure_no_auth:
        tenant = ANONYMOUS_TENANT
    else:
        if credentials is None:
            raise ApiError(401, "missing API key: send `Authorization: Bearer <key>`", {"WWW-Authenticate": "Bearer"})
        tenant = state.keys.tenant_for(credentials.credentials)
        if tenant is None:
            raise ApiError(401, "invalid API key", {"WWW-Authenticate": "Bearer"})
    if state.shared_limits is None:
        state.rate.check(tenant)
    else:
        try:
            await state.shared_limits.check_rate(tenant)
        except SharedLimitsError as error:
            raise ApiError(503, f"the rate limit cannot be checked: {error}") from None
    return tenant


Tenant = Annotated[str, Depends(authenticated_tenant)]
