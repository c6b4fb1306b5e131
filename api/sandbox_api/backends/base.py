"""The backend interface: where executions run (local bubblewrap, or Kubernetes).

The API validates and authorises, then hands a fully resolved `Execution` to a backend. A backend
owns running it and remembering its result for `get`, scoped to the tenant that submitted it.
"""

from __future__ import annotations

import secrets
from abc import ABC, abstractmethod
from dataclasses import dataclass

from sandbox_api.config import Settings
from sandbox_api.limits import InMemoryLimits, Limits
from sandbox_api.models import ExecutionResult, LanguageInfo
from sandbox_contract.request import ExecutionRequest


class BackendError(Exception):
    """The backend cannot take or run work right now (answered 503); the message says why."""


class InputTooLarge(BackendError):
    """The backend cannot store this request's inputs (answered 413); the message says the limit."""


def new_execution_id() -> str:
    """`exec-` and 20 lowercase hex characters: also a valid Kubernetes object name."""
    return "exec-" + secrets.token_hex(10)


@dataclass(frozen=True)
class Execution:
    """One resolved request (sandbox_contract.request.resolve_request), its id and its tenant."""

    id: str
    tenant: str
    request: ExecutionRequest

    @property
    def language(self) -> str:
        return self.request.language.name


class Backend(ABC):
    """Runs executions. All methods are called from the API's event loop."""

    name: str

    @abstractmethod
    async def start(self) -> None:
        """Prepare (detect versions, connect); called once before serving."""

    @abstractmethod
    async def stop(self) -> None:
        """Release resources; executions still running end (killed) or are left to the cluster."""

    @abstractmethod
    async def submit(self, execution: Execution) -> None:
        """Accept the execution and start it; returns without waiting. Raises BackendError."""

    @abstractmethod
    async def wait(self, execution_id: str, tenant: str, timeout_s: float) -> ExecutionResult | None:
        """The result once finished, or the current state after `timeout_s`; None if unknown to `tenant`."""

    @abstractmethod
    async def get(self, execution_id: str, tenant: str) -> ExecutionResult | None:
        """The current state or result; None when unknown, expired, or another tenant's."""

    @abstractmethod
    async def ready(self) -> tuple[bool, str]:
        """(ready, a sentence describing the state) for /readyz."""

    @abstractmethod
    def languages(self) -> list[LanguageInfo]:
        """The languages this backend runs, with the version that actually runs."""

    def create_limits(self, settings: Settings) -> Limits:
        """The per-key rate and concurrency limits that fit this backend: in memory by default."""
        return InMemoryLimits(settings)
