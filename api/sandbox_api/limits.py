"""Per-key request rate (token bucket), per-key and global caps on unfinished executions.

`Limits` is what the guard and the execution service ask; `InMemoryLimits` keeps the counts in this
process, sandbox_api.shared_limits.SharedLimits in the cluster, shared by every replica. A backend
says which it needs (Backend.create_limits).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sandbox_api.config import Settings


class LimitExceeded(Exception):
    """Over a limit: answered 429 with Retry-After."""

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class LimitsUnavailable(RuntimeError):
    """The limits cannot be checked right now: answered 503 rather than admit unchecked."""


class Limits(ABC):
    """A key's request rate and its unfinished executions, checked before work is taken.

    This replica's own capacity (its in-flight total, and one key's share of it) is always counted
    here, in `admission`; what else counts, and where, is the implementation's.
    """

    def __init__(self, settings: Settings):
        self.admission = Admission.for_settings(settings)

    @property
    def in_flight(self) -> int:
        """Executions this replica admitted that have not ended."""
        return self.admission.in_flight

    async def start(self) -> None:
        """Connect to wherever the counts are kept; called once before serving."""

    async def stop(self) -> None:
        """Release what start took."""

    @abstractmethod
    async def check_rate(self, tenant: str) -> None:
        """Take a token for one request: LimitExceeded when the key has none, LimitsUnavailable."""

    @abstractmethod
    async def admit(self, tenant: str, execution_id: str) -> None:
        """Count the execution as unfinished: LimitExceeded at a cap, LimitsUnavailable."""

    def release(self, tenant: str) -> None:
        """One of the key's admitted executions has ended (or was never started)."""
        self.admission.release(tenant)


class InMemoryLimits(Limits):
    """Rate and caps counted in this process: right for a single replica (the local backend)."""

    def __init__(self, settings: Settings):
        super().__init__(settings)
        self.rate = RateLimiter(per_minute=settings.rate_per_minute, burst=settings.rate_burst)

    async def check_rate(self, tenant: str) -> None:
        self.rate.check(tenant)

    async def admit(self, tenant: str, execution_id: str) -> None:
        self.admission.admit(tenant)


@dataclass
class TokenBucket:
    rate_per_s: float
    burst: int
    tokens: float
    updated: float

    def take(self, now: float) -> float:
        """0 when a token was taken, else the seconds until one is available."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate_per_s)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate_per_s


class RateLimiter:
    """One token bucket per tenant; the table is bounded by the configured tenants."""

    def __init__(self, *, per_minute: int, burst: int):
        self.rate_per_s = per_minute / 60
        self.burst = max(burst, 1)
        self._buckets: dict[str, TokenBucket] = {}

    def check(self, tenant: str) -> None:
        now = time.monotonic()
        bucket = self._buckets.setdefault(
            tenant, TokenBucket(rate_per_s=self.rate_per_s, burst=self.burst, tokens=self.burst, updated=now)
        )
        wait_s = bucket.take(now)
        if wait_s:
            raise LimitExceeded("rate limit exceeded for this API key; retry later", math.ceil(wait_s))


class Admission:
    """Counts unfinished executions per tenant and in all; refuses beyond the caps.

    A tenant may hold at most `per_tenant`, and at most `share_percent` of `total`, so one key can
    never take the whole server.
    """

    def __init__(self, *, per_tenant: int, total: int, share_percent: int):
        self.per_tenant = per_tenant
        self.total = total
        self.share = max(1, total * share_percent // 100)
        self._by_tenant: dict[str, int] = {}
        self.in_flight = 0

    @classmethod
    def for_settings(cls, settings: Settings) -> Admission:
        return cls(per_tenant=settings.max_concurrent_per_key, total=settings.max_in_flight,
                   share_percent=settings.key_share_percent)

    def admit(self, tenant: str) -> None:
        held = self._by_tenant.get(tenant, 0)
        if held >= self.per_tenant:
            raise LimitExceeded(
                f"this API key already has {self.per_tenant} executions unfinished; retry when one ends", 1
            )
        if self.in_flight >= self.total:
            raise LimitExceeded("the server is at capacity; retry shortly", 1)
        if held >= self.share:
            raise LimitExceeded(
                f"this API key holds its share of the server ({self.share} of {self.total} unfinished "
                "executions); retry when one ends", 1
            )
        self._by_tenant[tenant] = held + 1
        self.in_flight += 1

    def release(self, tenant: str) -> None:
        self.in_flight -= 1
        remaining = self._by_tenant[tenant] - 1
        if remaining:
            self._by_tenant[tenant] = remaining
        else:
            del self._by_tenant[tenant]


class FairSlots:
    """`slots` workers shared between tenants, handed out fairly: a freed slot goes to the waiting
    tenant holding the fewest (the longest waiting among equals), so one key's queue never stands in
    front of another key's work. Idle slots are never withheld: a lone key may use them all.

    `async with slots.slot(tenant):` holds one.
    """

    def __init__(self, slots: int):
        self.free = slots
        self._held: dict[str, int] = {}
        self._waiting: dict[str, deque[tuple[int, asyncio.Future]]] = {}
        self._arrivals = itertools.count()

    @asynccontextmanager
    async def slot(self, tenant: str) -> AsyncIterator[None]:
        if self.free and not self._waiting:
            self._take(tenant)
        else:
            waiter = (next(self._arrivals), asyncio.get_running_loop().create_future())
            self._waiting.setdefault(tenant, deque()).append(waiter)
            try:
                await waiter[1]
            except asyncio.CancelledError:
                if waiter[1].cancelled():
                    self._forget(tenant, waiter)
                else:  # granted, then cancelled before it could run: pass the slot on
                    self._give_back(tenant)
                raise
        try:
            yield
        finally:
            self._give_back(tenant)

    def _take(self, tenant: str) -> None:
        self.free -= 1
        self._held[tenant] = self._held.get(tenant, 0) + 1

    def _forget(self, tenant: str, waiter: tuple[int, asyncio.Future]) -> None:
        queue = self._waiting[tenant]
        queue.remove(waiter)
        if not queue:
            del self._waiting[tenant]

    def _give_back(self, tenant: str) -> None:
        self.free += 1
        self._held[tenant] -= 1
        if not self._held[tenant]:
            del self._held[tenant]
        while self.free and self._waiting:
            chosen = min(self._waiting, key=lambda name: (self._held.get(name, 0), self._waiting[name][0][0]))
            waiter = self._waiting[chosen][0]
            self._forget(chosen, waiter)
            self._take(chosen)
            waiter[1].set_result(None)
