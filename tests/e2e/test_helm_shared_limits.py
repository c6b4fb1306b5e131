"""sandbox_api.shared_limits on the real API server: two limiters, as two API replicas would hold,
share one tenant's rate and concurrency through a Lease, deciding concurrently; the tenant's
executions are counted from body-less, paginated lists, and its oldest finished ones deleted
beyond its retained-bytes budget."""

from __future__ import annotations

import asyncio
import os

import pytest

from sandbox_api.config import Settings
from sandbox_api.limits import LimitExceeded
from sandbox_api.shared_limits import ANNOTATION_SPEC_BYTES, OBJECT_OVERHEAD_BYTES, PAGE_SIZE, SharedLimits
from sandbox_contract import crd
from tests.e2e.kube import KUBECONFIG, apply, execution_body, get_json, kubectl

# No operator acts in the `namespace` fixture's namespaces: executions created there stay unfinished.
pytestmark = pytest.mark.usefixtures("sandbox_crd")


def replicas(namespace: str, *, per_minute: int, burst: int, per_tenant: int,
             retained_bytes: int = 1 << 30) -> list[SharedLimits]:
    """Two limiters on `namespace`, as two API replicas configured alike would hold."""
    settings = Settings(kubernetes_namespace=namespace, rate_per_minute=per_minute, rate_burst=burst,
                        max_concurrent_per_key=per_tenant, max_retained_bytes_per_key=retained_bytes)
    return [SharedLimits(settings) for _ in range(2)]


async def outcomes(calls) -> tuple[int, int]:
    """(allowed, refused) of the calls run concurrently; other errors propagate."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if result is not None and not isinstance(result, LimitExceeded):
            raise result
    refused = sum(isinstance(r, LimitExceeded) for r in results)
    return len(results) - refused, refused


async def run_with(limiters: list[SharedLimits], body):
    os.environ["KUBECONFIG"] = KUBECONFIG
    for limiter in limiters:
        await limiter.start()
    try:
        return await body()
    finally:
        for limiter in limiters:
            await limiter.stop()


def test_rate_burst_is_shared_by_both_replicas(namespace):
    # One token a minute: within the test only the burst (5) can be spent, across both replicas.
    limiters = replicas(namespace, per_minute=1, burst=5, per_tenant=100)
    calls = lambda: [limiters[i % 2].check_rate("acme") for i in range(12)]  # noqa: E731
    assert asyncio.run(run_with(limiters, lambda: outcomes(calls()))) == (5, 7)


def test_tenants_have_separate_buckets(namespace):
    limiters = replicas(namespace, per_minute=1, burst=2, per_tenant=100)

    async def body():
        spent = await outcomes([limiters[i % 2].check_rate("acme") for i in range(4)])
        other = await outcomes([limiters[i % 2].check_rate("globex") for i in range(2)])
        return spent, other

    assert asyncio.run(run_with(limiters, body)) == ((2, 2), (2, 0))


def tenant_execution(name: str, tenant: str, annotations: dict[str, str] | None = None) -> dict:
    """A SandboxExecution of `tenant`, labelled as the API labels it."""
    metadata = {"labels": {crd.LABEL_TENANT: crd.tenant_label_value(tenant)}}
    if annotations:
        metadata["annotations"] = annotations
    return execution_body(name, code="print(1)", metadata=metadata)


def test_concurrency_counts_unfinished_executions_across_replicas(namespace):
    # Two unfinished executions already exist for the tenant (no operator here: they stay pending).
    apply(namespace, tenant_execution("running-a", "acme"), tenant_execution("running-b", "acme"))
    limiters = replicas(namespace, per_minute=600, burst=100, per_tenant=3)

    async def body():
        first = await outcomes([limiters[i % 2].admit("acme", f"new-{i}") for i in range(6)])
        other = await outcomes([limiters[i % 2].admit("globex", f"g-{i}") for i in range(2)])
        return first, other

    # 3 allowed in all: 2 existing + exactly 1 of the 6 concurrent admissions, whichever replica.
    assert asyncio.run(run_with(limiters, body)) == ((1, 5), (2, 0))


def test_concurrency_counts_every_page_of_the_list(namespace):
    # More unfinished executions than one page of the list holds: all of them count.
    existing = PAGE_SIZE + 20
    apply(namespace, {"apiVersion": "v1", "kind": "List",
                      "items": [tenant_execution(f"pending-{index}", "acme") for index in range(existing)]})
    limiters = replicas(namespace, per_minute=600, burst=100, per_tenant=existing + 1)

    async def body():
        return await outcomes([limiters[0].admit("acme", "one-more")]), await outcomes([limiters[1].admit("acme", "too-many")])

    assert asyncio.run(run_with(limiters, body)) == ((1, 0), (0, 1))


def test_oldest_finished_executions_are_deleted_beyond_the_retained_bytes_budget(namespace):
    stored = {crd.ANNOTATION_RESULT_BYTES: "1000", ANNOTATION_SPEC_BYTES: "200"}
    for name in ("a-oldest", "b-older", "c-newest"):  # created in this order (names break ties of a second)
        apply(namespace, tenant_execution(name, "acme", stored))
        kubectl("-n", namespace, "patch", f"{crd.PLURAL}/{name}", "--subresource=status", "--type=merge",
                "-p", '{"status": {"phase": "completed"}}')
    apply(namespace, tenant_execution("d-running", "acme", stored), tenant_execution("other-tenant", "globex", stored))
    # 4 executions of acme, each 1200 bytes and the object's overhead; the budget keeps two: the
    # running one, and the newest finished.
    each = 1200 + OBJECT_OVERHEAD_BYTES
    limiters = replicas(namespace, retained_bytes=2 * each + each // 2, per_minute=600, burst=100, per_tenant=10)
    assert asyncio.run(run_with(limiters, lambda: outcomes([limiters[0].admit("acme", "new")]))) == (1, 0)
    names = {item["metadata"]["name"] for item in get_json("-n", namespace, crd.PLURAL)["items"]
             if not item["metadata"].get("deletionTimestamp")}
    assert names == {"c-newest", "d-running", "other-tenant"}
