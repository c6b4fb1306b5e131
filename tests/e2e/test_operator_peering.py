"""Two operator replicas on the same namespace: kopf peering lets exactly one act."""

from __future__ import annotations

from tests.e2e.kube import CHART, apply, execution, kubectl, wait_finished

PEERING = "sandbox-e2e"


def test_two_replicas_only_the_highest_priority_acts(namespace, start_operator):
    kubectl("apply", "-f", str(CHART / "crds" / "kopf-peerings.yaml"))
    kubectl("wait", "--for=condition=Established", "crd/kopfpeerings.kopf.dev", "--timeout=60s")
    apply(namespace, {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": PEERING}})
    low, high = (start_operator(namespaces=namespace, peering=PEERING, priority=str(priority)) for priority in (10, 20))
    apply(namespace, execution("shared", code="print('once')"))
    status = wait_finished(namespace, "shared")["status"]
    assert status["phase"] == "completed" and status["stdout"] == "once\n"
    assert "started: language=python" in high.log()
    assert "started: language=python" not in low.log()
    assert "Pausing operations in favour of" in low.log()
