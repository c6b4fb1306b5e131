"""Fixtures for the end-to-end tests on the real local cluster that hack/cluster.sh runs (the
helpers they share, kubectl and manifests, are in kube.py).

- `cluster` (session): brings the cluster up once per run unless it already runs; tears it down at
  the end only if this run started it and SANDBOX_KEEP_CLUSTER is not 1.
- `new_namespace` (session): makes this run's namespaces, all labelled one way (below), and deletes
  each without waiting once its owner is done; first it sweeps what earlier runs left behind.
  `namespace` is a fresh one for a test, `ns` one the `operator` watches.
- `sandbox_crd` (session): the chart's CRD, applied and established.
- `operator` (session): `python -m sandbox_operator` on the host, watching this run's `ns` namespaces.
- `installed_release` (session): `helm install` of the chart into a fresh namespace, and uninstall.

Every namespace carries `sandbox.dev/e2e=<run id>` and `sandbox.dev/e2e-module=<test module>`, the
test's node id in the annotation `sandbox.dev/e2e-test`, and enforces the `restricted` Pod Security
Standard. Runs side by side do not meet: each run's operator watches only its own namespaces
(`e2e-<run id>-op-*`). Every test under tests/e2e is marked `e2e`.
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from tests.e2e.kube import (
    CHART,
    INSTALL_TIMEOUT,
    KUBECONFIG,
    LANGUAGES_FILE,
    REPO,
    SETUP_DEADLINE_SECONDS,
    Release,
    apply,
    get_json,
    helm,
    kubectl,
    wait_until,
)
from tests.serving import free_port, wait_until_serving

CLUSTER_SCRIPT = REPO / "hack" / "cluster.sh"

RUN_ID = uuid.uuid4().hex[:8]
LABEL_RUN = "sandbox.dev/e2e"
LABEL_MODULE = "sandbox.dev/e2e-module"
ANNOTATION_TEST = "sandbox.dev/e2e-test"
RESTRICTED_LABELS = ("pod-security.kubernetes.io/enforce=restricted", "pod-security.kubernetes.io/enforce-version=latest")
WATCHED_PREFIX = f"e2e-{RUN_ID}-op-"
# Another run may be going on beside this one on the same cluster: only namespaces older than any
# run lasts are leftovers.
LEFTOVER_AGE = timedelta(hours=2)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test collected under tests/e2e as `e2e` (a conftest's pytestmark would not)."""
    e2e_dir = Path(__file__).parent
    for item in items:
        if e2e_dir in Path(item.fspath).parents:
            item.add_marker(pytest.mark.e2e)


# --- the cluster ---------------------------------------------------------------------------------

def _cluster_script(command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CLUSTER_SCRIPT), command], capture_output=True, text=True, stdin=subprocess.DEVNULL
    )


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[None]:
    """The local cluster, started for this run if it was not running."""
    started_here = _cluster_script("status").returncode != 0
    if started_here:
        # A cold start builds Kubernetes from source (tens of minutes): its phases and their elapsed
        # times go to the terminal as they happen, past pytest's capture.
        with request.config.pluginmanager.getplugin("capturemanager").global_and_fixture_disabled():
            print("\n==> the e2e tier needs the cluster: hack/cluster.sh up", file=sys.stderr, flush=True)
            up = subprocess.run([str(CLUSTER_SCRIPT), "up"], stdin=subprocess.DEVNULL)
        if up.returncode != 0:
            pytest.fail("hack/cluster.sh up failed: its output above says where and what to try", pytrace=False)
    yield
    if started_here and os.environ.get("SANDBOX_KEEP_CLUSTER") != "1":
        _cluster_script("down")


# --- namespaces ----------------------------------------------------------------------------------

def delete_namespace(name: str) -> None:
    """Delete the namespace without waiting."""
    # Executions carry the operator's finalizer (kopf's, for their retention daemon); remove it so the
    # namespace can go even once the operator has stopped. Deleted first: kopf re-adds a finalizer
    # removed from a live object, but no finalizer can be added to one being deleted.
    # Only those that hold one: one request per object is slow with hundreds of them.
    held = kubectl("-n", name, "get", "sbx", "-o", "jsonpath={range .items[?(@.metadata.finalizers)]}{.metadata.name} {end}",
                   check=False).stdout.split()
    if held:
        kubectl("-n", name, "delete", "sbx", *held, "--wait=false", check=False)
        kubectl("-n", name, "patch", "sbx", *held, "--type=merge", "-p", '{"metadata":{"finalizers":null}}', check=False)
    kubectl("delete", "namespace", name, "--ignore-not-found", "--wait=false", check=False)


def sweep_leftover_namespaces() -> None:
    """Delete the namespaces earlier runs left (a run killed before its teardown), and what a Helm
    release in one installed outside it (labelled with the release's name, which is the namespace's)."""
    now = datetime.now(timezone.utc)
    for item in get_json("namespaces", "-l", f"{LABEL_RUN},{LABEL_RUN}!={RUN_ID}")["items"]:
        created = datetime.fromisoformat(item["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
        if now - created < LEFTOVER_AGE:
            continue
        name = item["metadata"]["name"]
        release = f"app.kubernetes.io/instance={name}"
        for made in kubectl("get", "namespaces", "-l", release, "-o", "name").stdout.split():
            delete_namespace(made.removeprefix("namespace/"))
        kubectl("delete", "clusterrole,clusterrolebinding", "-l", release, "--wait=false")
        delete_namespace(name)


def _wait_for_default_service_account(name: str) -> None:
    # Pods are refused until the controller-manager has created the namespace's default ServiceAccount.
    wait_until(lambda: kubectl("-n", name, "get", "serviceaccount", "default", check=False).returncode == 0, 60,
               f"namespace {name}: the default ServiceAccount (is kube-controller-manager running?)")


@pytest.fixture(scope="session")
def new_namespace(cluster) -> Callable[..., contextlib.AbstractContextManager[str]]:  # noqa: ARG001  (up first)
    """new_namespace(owner, watched=False): a context manager for a fresh namespace of this run.

    `owner`: the node id of the test or module it is for (request.node.nodeid), the annotation; its
    module is a label. `restricted` enforced, ready for pods; deleted without waiting at the end.
    `watched`: the `operator` acts in it.
    """
    sweep_leftover_namespaces()

    @contextlib.contextmanager
    def create(owner: str, *, watched: bool = False) -> Iterator[str]:
        name = f"{WATCHED_PREFIX if watched else f'e2e-{RUN_ID}-'}{uuid.uuid4().hex[:6]}"
        kubectl("apply", "-f", "-", input=yaml.safe_dump({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name,
                         "labels": {LABEL_RUN: RUN_ID, LABEL_MODULE: Path(owner.split("::")[0]).stem,
                                    **dict(label.split("=") for label in RESTRICTED_LABELS)},
                         "annotations": {ANNOTATION_TEST: owner}},
        }))
        try:
            _wait_for_default_service_account(name)
            yield name
        finally:
            delete_namespace(name)

    return create


@pytest.fixture
def namespace(new_namespace, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test; no operator acts in it."""
    with new_namespace(request.node.nodeid) as name:
        yield name


@pytest.fixture
def ns(new_namespace, request: pytest.FixtureRequest, operator) -> Iterator[str]:  # noqa: ARG001  (the operator watches it)
    """A fresh namespace for one test that the operator watches."""
    with new_namespace(request.node.nodeid, watched=True) as name:
        yield name


# --- the operator --------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def sandbox_crd(cluster) -> None:  # noqa: ARG001  (up first)
    """The CRD from the chart, applied and established."""
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds" / "sandboxexecutions.yaml"))
    kubectl("wait", "--for=condition=Established", "crd/sandboxexecutions.sandbox.dev", "--timeout=60s")


class OperatorProcess:
    """`python -m sandbox_operator` as a child process that a test can kill -9 and start again."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        port = free_port()
        self.metrics_port = free_port()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "sandbox_operator", "--log-format", "plain",
                 "--liveness", f"http://127.0.0.1:{port}/healthz"],
                env={**os.environ, "KUBECONFIG": KUBECONFIG, **self.env, "SANDBOX_METRICS_PORT": str(self.metrics_port)},
                stdout=log, stderr=subprocess.STDOUT,
            )
        wait_until_serving(self.process, f"http://127.0.0.1:{port}/healthz", what="the operator", log=self.log, timeout=60)

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, as when a node dies."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def start_operator(sandbox_crd, tmp_path) -> Iterator[Callable[..., OperatorProcess]]:  # noqa: ARG001
    """start_operator(**settings): one more operator process, SANDBOX_<NAME> set from each setting;
    stopped at the end of the test."""
    started: list[OperatorProcess] = []

    def start(**settings: str) -> OperatorProcess:
        process = OperatorProcess({f"SANDBOX_{name.upper()}": value for name, value in settings.items()},
                                  tmp_path / f"operator-{len(started)}.log")
        started.append(process)
        process.start()
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture(scope="session")
def operator(sandbox_crd, tmp_path_factory) -> Iterator[OperatorProcess]:  # noqa: ARG001  (the CRD first)
    """The operator for this run's watched namespaces, with a catalogue that adds a language with no image.

    One process for the whole run: two operators on the same namespaces would both act.
    """
    workdir = tmp_path_factory.mktemp("operator")
    catalogue = yaml.safe_load(LANGUAGES_FILE.read_text())
    catalogue["languages"]["ghost"] = {
        "version": "0", "image": "localhost/sandbox/ghost:0.0-missing", "run": ["python3", "{main}"],
        "main_file": "main.py",
    }
    languages = workdir / "languages.yaml"
    languages.write_text(yaml.safe_dump(catalogue))
    process = OperatorProcess({
        "SANDBOX_NAMESPACES": f"{WATCHED_PREFIX}*",
        "SANDBOX_SETUP_DEADLINE_SECONDS": str(SETUP_DEADLINE_SECONDS), "SANDBOX_LANGUAGES_FILE": str(languages),
        # The dev node has 2 CPUs: at the default 100m request only ~19 sandboxes fit at once, and the
        # 50-at-once test would see the rest wait past the (short) setup deadline.
        "SANDBOX_CPU_REQUEST": "25m",
    }, workdir / "operator.log")
    process.start()
    yield process
    process.stop()


# --- Helm releases -------------------------------------------------------------------------------

def client_pod(image: str) -> dict:
    """A restricted pod that only waits; the tests `kubectl exec` the HTTP client in it."""
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "client", "labels": {"app.kubernetes.io/name": "e2e-client"}},
        "spec": {
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 1,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "client", "image": image, "imagePullPolicy": "IfNotPresent",
                "command": ["sleep", "3600"],
                "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}},
                "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}},
            }],
        },
    }


def component_images(command: str, **options) -> subprocess.CompletedProcess:
    """hack/component-images.sh: `build` builds the API and operator images (cached by content) and
    imports them into the cluster; `tag` prints their tag."""
    return subprocess.run([str(REPO / "hack" / "component-images.sh"), command], check=True, **options)


@pytest.fixture(scope="session")
def installed_release(new_namespace) -> Callable[..., contextlib.AbstractContextManager[Release]]:
    """installed_release(owner, *helm_values): `helm install` of the chart in a fresh namespace (the
    executions in `<it>-exec`), a client pod beside it; uninstalled at the end. `owner` as for new_namespace."""

    @contextlib.contextmanager
    def install(owner: str, *values: str) -> Iterator[Release]:
        component_images("build", timeout=1800)
        with new_namespace(owner) as namespace:
            sandbox_namespace = f"{namespace}-exec"
            try:
                helm("install", namespace, str(CHART), "--namespace", namespace,
                     "--set", f"sandboxNamespace.name={sandbox_namespace}", *values, "--wait", "--timeout", INSTALL_TIMEOUT)
                secret = get_json("secret", f"{namespace}-code-sandbox-api-keys", "-n", namespace)
                release = Release(namespace, namespace, sandbox_namespace,
                                  base64.b64decode(secret["data"]["client-key"]).decode())
                tag = component_images("tag", capture_output=True, text=True).stdout.strip()
                apply(namespace, client_pod(f"localhost/sandbox/api:{tag}"))
                kubectl("-n", namespace, "wait", "--for=condition=Ready", "pod/client", "--timeout=120s")
                yield release
            finally:
                helm("uninstall", namespace, "--namespace", namespace, "--wait", "--timeout", "3m", check=False)
                delete_namespace(sandbox_namespace)

    return install
