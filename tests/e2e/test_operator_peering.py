"""Two operator replicas on the same namespace: kopf peering lets exactly one act."""

from __future__ import annotations

import os
import uuid

import pytest
import yaml

from tests.e2e.test_operator import (  # noqa: F401  (fixture)
    KUBECONFIG,
    REPO,
    OperatorProcess,
    _delete_namespace,
    execution,
    kubectl,
    sandbox_crd,
    wait_finished,
)

pytestmark = pytest.mark.e2e

PEERING = "sandbox-e2e"


def test_two_replicas_only_the_highest_priority_acts(sandbox_crd, tmp_path):  # noqa: F811
    kubectl("apply", "-f", str(REPO / "charts" / "code-sandbox" / "crds" / "kopf-peerings.yaml"))
    kubectl("wait", "--for=condition=Established", "crd/kopfpeerings.kopf.dev", "--timeout=60s")
    namespace = f"sbxpeer-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", namespace)
    replicas = []
    try:
        kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(
            {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": PEERING}}))
        for priority in (10, 20):
            env = {**os.environ, "KUBECONFIG": KUBECONFIG, "SANDBOX_NAMESPACES": namespace,
                   "SANDBOX_PEERING": PEERING, "SANDBOX_PRIORITY": str(priority)}
            replica = OperatorProcess(env, tmp_path / f"operator-{priority}.log")
            replica.start()
            replicas.append(replica)
        kubectl("apply", "-n", namespace, "-f", "-", input=execution("shared", code="print('once')"))
        status = wait_finished(namespace, "shared")["status"]
        assert status["phase"] == "completed" and status["stdout"] == "once\n"
        low, high = (replica.log() for replica in replicas)
        assert "started: language=python" in high
        assert "started: language=python" not in low
        assert "Pausing operations in favour of" in low
    finally:
        kubectl("delete", "sbx", "--all", "-n", namespace, "--timeout=60s", check=False)
        for replica in replicas:
            replica.stop()
        _delete_namespace(namespace)
