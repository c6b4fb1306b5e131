"""sandbox_api.shared_limits on the real API server: two limiters, as two API replicas would hold,
share one tenant's rate and concurrency through a Lease, deciding concurrently."""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest
import yaml

from sandbox_api.limits import LimitExceeded
from sandbox_api.shared_limits import SharedLimits
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


def replicas(namespace: str, **limits) -> list[SharedLimits]:
    return [SharedLimits(namespace=namespace, **limits) for _ in range(2)]


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


def execution(name: str, tenant: str) -> str:
    """A SandboxExecution of `tenant`; no operator serves this namespace, so it stays unfinished."""
    body = {
        "apiVersion": contract.API_VERSION, "kind": contract.KIND,
        "metadata": {"name": name, "labels": {contract.LABEL_TENANT: contract.tenant_label_value(tenant)}},
        "spec": {"language": "python", "code": "print(1)"},
    }
    return yaml.safe_dump(body)


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
