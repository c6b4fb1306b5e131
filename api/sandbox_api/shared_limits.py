"""Per-key rate and concurrency limits that hold across every API replica, kept in the cluster.

In-memory limiters count per replica: with two replicas a key gets twice its share. Here the state
lives in one Lease per tenant in the sandbox namespace, and every decision is a read-modify-write
of that Lease guarded by its resourceVersion (optimistic concurrency). Two replicas deciding at the
same moment serialise: the loser's update is refused with 409 and it decides again on fresh state.

- Rate: the tenant's token bucket (tokens, last update) is stored in the Lease's annotations.
- Concurrency: the tenant's unfinished SandboxExecutions (a label-selected list; the resources are
  the truth, so a replica that dies leaks nothing) plus admissions granted in the last few seconds
  that the list cannot show yet, recorded in the Lease until their resource appears.
- Retained bytes: each execution carries the size of its spec (annotated by the API at creation)
  and of its stored result (annotated by the operator when it finishes). Over the tenant's budget,
  its oldest finished executions are deleted before the new one is created: results are dropped
  oldest first, as the local backend's store does, rather than new work refused for up to an hour.

Lists never fetch bodies: they ask for the CRD's printer columns as a Table (name, phase) with each
row's metadata (annotations, creation time), page by page, so a POST costs the same however large
the tenant's retained results are. A metadata-only list would not do: the phase is in the status.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from dataclasses import dataclass, field

from kubernetes.aio import client

from sandbox_api.config import Settings
from sandbox_api.limits import LimitExceeded, Limits, LimitsUnavailable, TokenBucket
from sandbox_contract import crd
from sandbox_contract.result import TERMINAL_PHASES
from sandbox_kube import connect, tolerating

ANNOTATION_TOKENS = f"{crd.GROUP}/rate-tokens"
ANNOTATION_UPDATED = f"{crd.GROUP}/rate-updated"
ANNOTATION_ADMITTED = f"{crd.GROUP}/admitted"
# The stored size of an execution's spec, written by the API when it creates the execution.
ANNOTATION_SPEC_BYTES = f"{crd.GROUP}/spec-bytes"
# What an execution costs beyond its spec and result: metadata, managed fields, conditions.
OBJECT_OVERHEAD_BYTES = 4096
TABLE = "application/json;as=Table;g=meta.k8s.io;v=v1"
PAGE_SIZE = 500
LEASE_PREFIX = "sandbox-limits-"
# An admission is counted from the Lease until its resource shows up in the list, or this long.
ADMISSION_GRACE_SECONDS = 30.0
# Requests of one replica take turns (a lock per tenant), so a conflict means another replica decided
# first; a handful of retries settles any realistic burst, and beyond them we refuse rather than guess.
MAX_ATTEMPTS = 20


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Listed:
    """One SandboxExecution as a body-less list shows it."""

    name: str
    phase: str | None
    created: str  # RFC 3339 in UTC: sorts in time order
    stored_bytes: int  # spec and stored result as annotated, and the object's overhead

    @property
    def finished(self) -> bool:
        return self.phase in TERMINAL_PHASES


def _annotated_bytes(annotations: dict[str, str], name: str) -> int:
    value = annotations.get(name, "0")
    return int(value) if value.isdigit() else 0


async def list_executions(api: client.ApiClient, namespace: str, label_selector: str) -> tuple[list[Listed], str]:
    """Every SandboxExecution the selector matches, without bodies, and the list's resourceVersion."""
    objects = client.CustomObjectsApi(api)
    listed: list[Listed] = []
    token = None
    while True:
        page = await objects.list_namespaced_custom_object(
            crd.GROUP, crd.VERSION, namespace, crd.PLURAL, label_selector=label_selector,
            limit=PAGE_SIZE, _continue=token, _headers={"Accept": TABLE},
        )
        columns = [column["name"] for column in page.get("columnDefinitions") or []]
        if "Phase" not in columns:
            raise LimitsUnavailable(f"the {crd.PLURAL} CRD has no Phase printer column (columns: {columns})")
        phase = columns.index("Phase")
        for row in page.get("rows") or []:
            metadata = row["object"]["metadata"]
            annotations = metadata.get("annotations") or {}
            listed.append(Listed(
                name=metadata["name"],
                phase=row["cells"][phase],
                created=metadata.get("creationTimestamp", ""),
                stored_bytes=OBJECT_OVERHEAD_BYTES + _annotated_bytes(annotations, ANNOTATION_SPEC_BYTES)
                + _annotated_bytes(annotations, crd.ANNOTATION_RESULT_BYTES),
            ))
        token = page["metadata"].get("continue")
        if not token:
            return listed, page["metadata"]["resourceVersion"]


def over_budget(listed: list[Listed], *, budget: int) -> list[Listed]:
    """The oldest finished executions to delete so the tenant's retained bytes fit `budget` (as far
    as finished ones can make room: unfinished ones are never deleted)."""
    total = sum(item.stored_bytes for item in listed)
    doomed = []
    for item in sorted((item for item in listed if item.finished), key=lambda item: (item.created, item.name)):
        if total <= budget:
            break
        doomed.append(item)
        total -= item.stored_bytes
    return doomed


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
    return LEASE_PREFIX + crd.tenant_label_value(tenant)


class SharedLimits(Limits):
    """Rate and concurrency per tenant, shared through the cluster by all replicas (the cluster's
    count of a tenant's unfinished executions falls by itself when one finishes)."""

    def __init__(self, settings: Settings):
        super().__init__(settings)
        self.namespace = settings.kubernetes_namespace
        self.rate_per_s = settings.rate_per_minute / 60
        self.burst = max(settings.rate_burst, 1)
        self.per_tenant = settings.max_concurrent_per_key
        self.retained_bytes = settings.max_retained_bytes_per_key
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
        """Count the execution against this replica's capacity and the tenant's cluster-wide limit;
        LimitExceeded (429) at either. Then delete the tenant's oldest finished executions while its
        retained bytes are over the budget.
        """
        self.admission.admit(tenant)
        try:
            await self._admit_in_cluster(tenant, execution_id)
        except BaseException:
            self.admission.release(tenant)
            raise

    async def _admit_in_cluster(self, tenant: str, execution_id: str) -> None:
        def decide(state: TenantState, now: float, listed: set[str], unfinished: set[str]) -> None:
            if not admit_execution(state, execution_id=execution_id, listed=listed, unfinished=unfinished,
                                   limit=self.per_tenant, now=now):
                raise LimitExceeded(
                    f"this API key already has {self.per_tenant} executions unfinished; retry when one ends", 1
                )

        listing = await self._update(tenant, decide, list_unfinished=True)
        objects = client.CustomObjectsApi(self._api)
        for item in over_budget(listing, budget=self.retained_bytes):
            try:
                with tolerating(404):  # gone already (its TTL, or another replica)
                    await objects.delete_namespaced_custom_object(
                        crd.GROUP, crd.VERSION, self.namespace, crd.PLURAL, item.name
                    )
            except client.ApiException as error:
                raise LimitsUnavailable(f"the cluster refused to delete {item.name} ({error.status} {error.reason})") from None
            except OSError as error:
                raise LimitsUnavailable(f"the cluster is unreachable: {error}") from None
            log.info("deleted %s (%d bytes): its tenant is over its retained-bytes budget", item.name, item.stored_bytes)

    async def _update(self, tenant: str, decide, *, list_unfinished: bool) -> list[Listed]:
        """Read the tenant's Lease, let `decide` change its state (or raise), write it back if unchanged
        since; the tenant's executions as listed for the decision (none unless `list_unfinished`)."""
        async with self._turns.setdefault(tenant, asyncio.Lock()):
            return await self._update_in_turn(tenant, decide, list_unfinished=list_unfinished)

    async def _update_in_turn(self, tenant: str, decide, *, list_unfinished: bool) -> list[Listed]:
        leases = client.CoordinationV1Api(self._api)
        name = lease_name(tenant)
        try:
            for _ in range(MAX_ATTEMPTS):
                lease = None
                with tolerating(404):
                    lease = await leases.read_namespaced_lease(name, self.namespace)
                # The list is taken after the Lease is read: anything admitted before that read is
                # either in the Lease or (created since) in the list.
                listing = (await list_executions(
                    self._api, self.namespace, f"{crd.LABEL_TENANT}={crd.tenant_label_value(tenant)}"
                ))[0] if list_unfinished else []
                now = time.time()
                annotations = (lease.metadata.annotations or {}) if lease is not None else {}
                state = TenantState.from_annotations(annotations, burst=self.burst, now=now)
                decide(state, now, {item.name for item in listing}, {item.name for item in listing if not item.finished})
                try:
                    if lease is None:
                        body = client.V1Lease(metadata=client.V1ObjectMeta(
                            name=name, annotations=state.annotations(),
                            labels={crd.LABEL_TENANT: crd.tenant_label_value(tenant)}))
                        await leases.create_namespaced_lease(self.namespace, body)
                    else:
                        lease.metadata.annotations = {**annotations, **state.annotations()}
                        await leases.replace_namespaced_lease(name, self.namespace, lease)
                    return listing
                except client.ApiException as error:
                    if error.status != 409:  # 409: another replica wrote first; decide again
                        raise
                await asyncio.sleep(0)
        except client.ApiException as error:
            raise LimitsUnavailable(f"the cluster refused the limits lease ({error.status} {error.reason})") from None
        except OSError as error:
            raise LimitsUnavailable(f"the cluster is unreachable: {error}") from None
        raise LimitsUnavailable(f"too many concurrent updates of {name}; retry")
