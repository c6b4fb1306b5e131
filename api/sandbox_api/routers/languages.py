"""GET /api/sandbox/languages."""

from __future__ import annotations

from fastapi import APIRouter

from sandbox_api.errors import ERROR_RESPONSES
from sandbox_api.models import LanguageList
from sandbox_api.state import State, Tenant

router = APIRouter(prefix="/api/sandbox", tags=["languages"])


@router.get(
    "/languages",
    operation_id="list_languages",
    response_model=LanguageList,
    responses={code: ERROR_RESPONSES[code] for code in (401, 429)},
)
async def list_languages(state: State, tenant: Tenant) -> LanguageList:
    """The languages that can run, with the version that actually runs them."""
    return LanguageList(languages=state.backend.languages())
