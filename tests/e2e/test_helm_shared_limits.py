"""sandbox_api.shared_limits on the real API server: two limiters, as two API replicas would hold,
share one tenant's rate and concurrency through a Lease, deciding concurrently; the tenant's
executions are counted from body-less, paginated lists, and its oldest finished ones deleted
beyond its retained-bytes budget."""

from __future__ import annotations

import asyncio
import json
import os
import uuid

import pytest
import yaml

from sandbox_api.limits import LimitExceeded
from sandbox_api.shared_limits import ANNOTATION_SPEC_BYTES, OBJECT_OVERHEAD_BYTES, PAGE_SIZE, SharedLimits
from sandbox_operator import contract
from tests.e2e.test_operator import KUBECONFIG, REPO, kubectl

pytestmark = pytest.mark.e2e


@pytest.fixture()
def namespace():
    if not os.path.exists(KUBECONFIG):
        pytest.fail(f"no cluster kubeconfig at {KUBECONFIG}: run `make cluster-up` first")
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "charts" / "code-sandbox" / "crds" / "sandboxexecutions.yaml"))
    name = f"sbxlimits-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        kubectl("delete", "namespace", name, "--wait=false", check=False)


def replicas(namespace: str, retained_bytes: int = 1 << 30, **limits) -> list[SharedLimits]:
    return [SharedLimits(namespace=namespace, retained_bytes=retained_bytes, **limits) for _ in range(2)]


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


def execution_body(name: str, tenant: str, annotations: dict[str, str] | None = None) -> dict:
    """A SandboxExecution of `tenant`; no operator serves this namespace, so it stays unfinished."""
    metadata = {"name": name, "labels": {contract.LABEL_TENANT: contract.tenant_label_value(tenant)}}
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": contract.API_VERSION, "kind": contract.KIND, "metadata": metadata,
            "spec": {"language": "python", "code": "print(1)"}}


def execution(name: str, tenant: str) -> str:
    return yaml.safe_dump(execution_body(name, tenant))


def test_concurrency_counts_unfinished_executions_across_replicas(namespace):
    # Two unfinished executions already exist for the tenant (no operator here: they stay pending).
    for name in ("running-a", "running-b"):
        kubectl("apply", "-n", namespace, "-f", "-", input=execution(name, "acme"))
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
    items = [execution_body(f"pending-{index}", "acme") for index in range(existing)]
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items}))
    limiters = replicas(namespace, per_minute=600, burst=100, per_tenant=existing + 1)

    async def body():
        return await outcomes([limiters[0].admit("acme", "one-more")]), await outcomes([limiters[1].admit("acme", "too-many")])

    assert asyncio.run(run_with(limiters, body)) == ((1, 0), (0, 1))


def test_oldest_finished_executions_are_deleted_beyond_the_retained_bytes_budget(namespace):
    stored = {contract.ANNOTATION_RESULT_BYTES: "1000", ANNOTATION_SPEC_BYTES: "200"}
    for name in ("a-oldest", "b-older", "c-newest"):  # created in this order (names break ties of a second)
        kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(execution_body(name, "acme", stored)))
        kubectl("patch", "-n", namespace, f"{contract.PLURAL}/{name}", "--subresource=status", "--type=merge",
                "-p", '{"status": {"phase": "completed"}}')
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(execution_body("d-running", "acme", stored)))
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(execution_body("other-tenant", "globex", stored)))
    # 4 executions of acme, each 1200 bytes and the object's overhead; the budget keeps two: the
    # running one, and the newest finished.
    each = 1200 + OBJECT_OVERHEAD_BYTES
    limiters = replicas(namespace, retained_bytes=2 * each + each // 2, per_minute=600, burst=100, per_tenant=10)
    assert asyncio.run(run_with(limiters, lambda: outcomes([limiters[0].admit("acme", "new")]))) == (1, 0)
    names = {item["metadata"]["name"] for item in json.loads(kubectl("get", "-n", namespace, contract.PLURAL, "-o", "json").stdout)["items"]
             if not item["metadata"].get("deletionTimestamp")}
    assert names == {"c-newest", "d-running", "other-tenant"}
