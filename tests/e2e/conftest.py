"""Fixtures for the end-to-end tests on the real local cluster that hack/cluster.sh builds and runs.

- `cluster` (session): brings the cluster up once per run unless it already runs; tears it down at
  the end only if this run started it and SANDBOX_KEEP_CLUSTER is not 1.
- `namespace`: a fresh namespace named from a uuid, labelled sandbox.dev/test=true, deleted
  without waiting.
- `kube_api` (session): a kubernetes.client.ApiClient for the cluster.
Every test under tests/e2e is marked `e2e`.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SCRIPT = REPO / "hack" / "cluster.sh"
CLUSTER_DIR = Path(os.environ.get("SANDBOX_CLUSTER_DIR", "/var/lib/sandbox-cluster"))
TEST_LABEL = "sandbox.dev/test=true"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test collected under tests/e2e as `e2e` (a conftest's pytestmark would not)."""
    e2e_dir = Path(__file__).parent
    for item in items:
        if e2e_dir in Path(item.fspath).parents:
            item.add_marker(pytest.mark.e2e)


class KubectlError(subprocess.CalledProcessError):
    """kubectl exited non-zero; the message carries its stderr."""

    def __str__(self) -> str:
        return f"kubectl {' '.join(self.cmd[3:])} failed ({self.returncode}):\n{self.stderr}{self.output}"


@dataclass(frozen=True)
class Cluster:
    """The running cluster: its admin kubeconfig and the kubectl and helm built for it."""

    kubeconfig: Path
    kubectl: Path
    helm: Path

    def kubectl_run(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess:
        """Run kubectl against the cluster; text output; raise KubectlError on failure if check."""
        command = [str(self.kubectl), "--kubeconfig", str(self.kubeconfig), *args]
        completed = subprocess.run(command, input=input, capture_output=True, text=True, timeout=timeout)
        if check and completed.returncode != 0:
            raise KubectlError(completed.returncode, command, completed.stdout, completed.stderr)
        return completed


def _cluster_script(command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CLUSTER_SCRIPT), command], capture_output=True, text=True, stdin=subprocess.DEVNULL
    )


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """The local cluster, started for this run if it was not running."""
    started_here = _cluster_script("status").returncode != 0
    if started_here:
        # A cold start builds Kubernetes from source: tens of minutes, progress in the output.
        up = _cluster_script("up")
        if up.returncode != 0:
            pytest.fail(f"hack/cluster.sh up failed:\n{up.stdout}\n{up.stderr[-6000:]}", pytrace=False)
    yield Cluster(
        kubeconfig=CLUSTER_DIR / "kubeconfig",
        kubectl=CLUSTER_DIR / "bin" / "kubectl",
        helm=CLUSTER_DIR / "bin" / "helm",
    )
    if started_here and os.environ.get("SANDBOX_KEEP_CLUSTER") != "1":
        _cluster_script("down")


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace for one test, ready for pods (its default ServiceAccount exists)."""
    name = f"e2e-{uuid.uuid4().hex[:12]}"
    cluster.kubectl_run("create", "namespace", name)
    cluster.kubectl_run("label", "namespace", name, TEST_LABEL)
    # Pods are refused until the controller-manager has created the namespace's default ServiceAccount.
    deadline = time.monotonic() + 60
    while cluster.kubectl_run("-n", name, "get", "serviceaccount", "default", check=False).returncode != 0:
        if time.monotonic() > deadline:
            pytest.fail(f"namespace {name}: no default ServiceAccount after 60 s (is kube-controller-manager running?)")
        time.sleep(0.5)
    yield name
    cluster.kubectl_run("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def kube_api(cluster: Cluster):
    """A kubernetes.client.ApiClient configured from the cluster's admin kubeconfig."""
    from kubernetes import config

    api_client = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    yield api_client
    api_client.close()
