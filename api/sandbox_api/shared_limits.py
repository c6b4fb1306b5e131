"""Per-key rate and concurrency limits that hold across every API replica, kept in the cluster.

In-memory limiters count per replica: with two replicas a key gets twice its share. Here the state
lives in one Lease per tenant in the sandbox namespace, and every decision is a read-modify-write
of that Lease guarded by its resourceVersion (optimistic concurrency). Two replicas deciding at the
same moment serialise: the loser's update is refused with 409 and it decides again on fresh state.

- Rate: the tenant's token bucket (tokens, last update) is stored in the Lease's annotations.
- Concurrency: the tenant's unfinished SandboxExecutions (a label-selected list; the resources are
  the truth, so a replica that dies leaks nothing) plus admissions granted in the last few seconds
  that the list cannot show yet, recorded in the Lease until their resource appears.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass, field

from kubernetes.aio import client

from sandbox_api.limits import LimitExceeded, TokenBucket
from sandbox_operator import contract
from sandbox_operator.kube import connect

ANNOTATION_TOKENS = f"{contract.GROUP}/rate-tokens"
ANNOTATION_UPDATED = f"{contract.GROUP}/rate-updated"
ANNOTATION_ADMITTED = f"{contract.GROUP}/admitted"
LEASE_PREFIX = "sandbox-limits-"
# An admission is counted from the Lease until its resource shows up in the list, or this long.
ADMISSION_GRACE_SECONDS = 30.0
# Requests of one replica take turns (a lock per tenant), so a conflict means another replica decided
# first; a handful of retries settles any realistic burst, and beyond them we refuse rather than guess.
MAX_ATTEMPTS = 20


class SharedLimitsError(RuntimeError):
    """The cluster could not be asked; the caller answers 503 rather than admit unchecked."""


@dataclass
class TenantState:
    """What the Lease records for one tenant."""

    tokens: float
    updated: float
    admitted: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_annotations(cls, annotations: dict[str, str], *, burst: int, now: float) -> TenantState:
        try:
            return cls(
                tokens=float(annotations[ANNOTATION_TOKENS]),
                updated=float(annotations[ANNOTATION_UPDATED]),
                admitted={str(k): float(v) for k, v in json.loads(annotations.get(ANNOTATION_ADMITTED, "{}")).items()},
            )
        except (KeyError, ValueError, TypeError, AttributeError):
            return cls(tokens=float(burst), updated=now)  # new or unreadable: a full bucket

    def annotations(self) -> dict[str, str]:
        return {
            ANNOTATION_TOKENS: repr(self.tokens),
            ANNOTATION_UPDATED: repr(self.updated),
            ANNOTATION_ADMITTED: json.dumps(self.admitted, sort_keys=True),
        }


def take_token(state: TenantState, *, rate_per_s: float, burst: int, now: float) -> float:
    """Take one token from the tenant's bucket: 0 when taken, else the seconds until one is due."""
    bucket = TokenBucket(rate_per_s=rate_per_s, burst=burst, tokens=state.tokens, updated=min(state.updated, now))
    wait_s = bucket.take(now)
    state.tokens, state.updated = bucket.tokens, bucket.updated
    return wait_s


def admit_execution(
    state: TenantState, *, execution_id: str, listed: set[str], unfinished: set[str], limit: int, now: float
) -> bool:
    """Record the admission when the tenant has fewer than `limit` executions unfinished.

    `listed` names every execution of the tenant the cluster shows (any phase), `unfinished` those of
    them not finished yet.
    """
    # Admissions whose resource is now listed (counted there while unfinished) or that are old enough
    # to have been created (or failed to be) are dropped from the Lease.
    state.admitted = {
        name: at for name, at in state.admitted.items()
        if name not in listed and now - at < ADMISSION_GRACE_SECONDS
    }
    if len(unfinished) + len(state.admitted) >= limit:
        return False
    state.admitted[execution_id] = now
    return True


def lease_name(tenant: str) -> str:
    return LEASE_PREFIX + contract.tenant_label_value(tenant)


class SharedLimits:
    """Rate and concurrency per tenant, shared through the cluster by all replicas."""

    def __init__(self, *, namespace: str, per_minute: int, burst: int, per_tenant: int):
        self.namespace = namespace
        self.rate_per_s = per_minute / 60
        self.burst = max(burst, 1)
        self.per_tenant = per_tenant
        self._api: client.ApiClient | None = None
        self._turns: dict[str, asyncio.Lock] = {}

    async def start(self) -> None:
        self._api = await connect()

    async def stop(self) -> None:
        if self._api is not None:
            await self._api.close()

    async def check_rate(self, tenant: str) -> None:
        """Take a token for this request; LimitExceeded (429) when the tenant has none left."""
        def decide(state: TenantState, now: float, _listed: set[str], _unfinished: set[str]) -> str | None:
            wait_s = take_token(state, rate_per_s=self.rate_per_s, burst=self.burst, now=now)
            if wait_s:
                raise LimitExceeded("rate limit exceeded for this API key; retry later", math.ceil(wait_s))
            return None

        await self._update(tenant, decide, list_unfinished=False)

    async def admit(self, tenant: str, execution_id: str) -> None:
        """Count the execution against the tenant; LimitExceeded (429) at the concurrency limit."""
        def decide(state: TenantState, now: float, listed: set[str], unfinished: set[str]) -> None:
            if not admit_execution(state, execution_id=execution_id, listed=listed, unfinished=unfinished,
                                   limit=self.per_tenant, now=now):
                raise LimitExceeded(
                    f"this API key already has {self.per_tenant} executions unfinished; retry when one ends", 1
                )

        await self._update(tenant, decide, list_unfinished=True)

    async def _executions(self, tenant: str) -> tuple[set[str], set[str]]:
        """The tenant's executions the cluster shows: all of them, and those not finished yet."""
        listing = await client.CustomObjectsApi(self._api).list_namespaced_custom_object(
            contract.GROUP, contract.VERSION, self.namespace, contract.PLURAL,
            label_selector=f"{contract.LABEL_TENANT}={contract.tenant_label_value(tenant)}",
        )
        items = listing.get("items", [])
        listed = {item["metadata"]["name"] for item in items}
        unfinished = {
            item["metadata"]["name"] for item in items
            if (item.get("status") or {}).get("phase") not in contract.TERMINAL_PHASES
        }
        return listed, unfinished

    async def _update(self, tenant: str, decide, *, list_unfinished: bool) -> None:
        """Read the tenant's Lease, let `decide` change its state (or raise), write it back if unchanged since."""
        async with self._turns.setdefault(tenant, asyncio.Lock()):
            await self._update_in_turn(tenant, decide, list_unfinished=list_unfinished)

    async def _update_in_turn(self, tenant: str, decide, *, list_unfinished: bool) -> None:
        leases = client.CoordinationV1Api(self._api)
        name = lease_name(tenant)
        try:
            for _ in range(MAX_ATTEMPTS):
                try:
                    lease = await leases.read_namespaced_lease(name, self.namespace)
                except client.ApiException as error:
                    if error.status != 404:
                        raise
                    lease = None
                # The list is taken after the Lease is read: anything admitted before that read is
                # either in the Lease or (created since) in the list.
                listed, unfinished = await self._executions(tenant) if list_unfinished else (set(), set())
                now = time.time()
                annotations = (lease.metadata.annotations or {}) if lease is not None else {}
                state = TenantState.from_annotations(annotations, burst=self.burst, now=now)
                decide(state, now, listed, unfinished)
                try:
                    if lease is None:
                        body = client.V1Lease(metadata=client.V1ObjectMeta(
                            name=name, annotations=state.annotations(),
                            labels={contract.LABEL_TENANT: contract.tenant_label_value(tenant)}))
                        await leases.create_namespaced_lease(self.namespace, body)
                    else:
                        lease.metadata.annotations = {**annotations, **state.annotations()}
                        await leases.replace_namespaced_lease(name, self.namespace, lease)
                    return
                except client.ApiException as error:
                    if error.status != 409:  # 409: another replica wrote first; decide again
                        raise
                await asyncio.sleep(0)
        except client.ApiException as error:
            raise SharedLimitsError(f"the cluster refused the limits lease ({error.status} {error.reason})") from None
        except OSError as error:
            raise SharedLimitsError(f"the cluster is unreachable: {error}") from None
        raise SharedLimitsError(f"too many concurrent updates of {name}; retry")
