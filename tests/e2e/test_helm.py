"""The Helm chart installed into the real cluster and called from a pod inside it.

One release per module, in its own namespaces (`sbxhelm-<id>` for the components, `<that>-exec` for
the executions), with two API and two operator replicas. The client is a pod in the release's
namespace running python's standard HTTP client against the Service or one API pod; the test
reads what it prints. The last test uninstalls the release and checks what is left.
"""

from __future__ import annotations

import base64
import json
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.e2e.test_operator import CLUSTER_DIR, KUBECONFIG, REPO, get_json, kubectl

pytestmark = pytest.mark.e2e

HELM = str(CLUSTER_DIR / "bin" / "helm")
CHART = str(REPO / "charts" / "code-sandbox")
# Bounds against hanging, not timing assertions.
INSTALL_TIMEOUT = "6m"
FINISH_SECONDS = 240

# Runs inside the client pod: METHOD URL KEY [JSON BODY] -> prints {"status": ..., "body": ...}.
CLIENT = """
import json, sys, urllib.error, urllib.request
method, url, key = sys.argv[1:4]
data = sys.argv[4].encode() if len(sys.argv) > 4 else None
request = urllib.request.Request(url, data=data, method=method, headers={
    "Authorization": "Bearer " + key, "Content-Type": "application/json"})
try:
    with urllib.request.urlopen(request, timeout=300) as response:
        status, body = response.status, response.read()
except urllib.error.HTTPError as error:
    status, body = error.code, error.read()
print(json.dumps({"status": status, "body": json.loads(body or b"null")}))
"""


def helm(*args: str, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    done = subprocess.run([HELM, "--kubeconfig", KUBECONFIG, *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done


@dataclass
class Release:
    name: str
    namespace: str
    sandbox_namespace: str
    key: str

    @property
    def api(self) -> str:
        return f"{self.name}-code-sandbox-api" if "code-sandbox" not in self.name else f"{self.name}-api"

    def service_url(self) -> str:
        service = get_json("service", self.api, "-n", self.namespace)
        return f"http://{service['spec']['clusterIP']}:{service['spec']['ports'][0]['port']}"

    def api_pod_urls(self) -> list[str]:
        pods = get_json("pods", "-n", self.namespace, "-l", f"app.kubernetes.io/instance={self.name},app.kubernetes.io/name=api")
        running = [p for p in pods["items"] if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]
        return [f"http://{p['status']['podIP']}:8000" for p in running]

    def call(self, method: str, url: str, body: dict | None = None, *, key: str | None = None) -> tuple[int, dict]:
        """An HTTP call made by the client pod inside the cluster."""
        args = ["exec", "-n", self.namespace, "client", "--", "/opt/sandbox/bin/python", "-c", CLIENT,
                method, url, key or self.key]
        if body is not None:
            args.append(json.dumps(body))
        answer = json.loads(kubectl(*args).stdout)
        return answer["status"], answer["body"]

    def execute(self, url: str, language: str, code: str, **extra) -> tuple[int, dict]:
        return self.call("POST", f"{url}/api/sandbox/execute", {"language": language, "code": code, **extra})

    def wait_result(self, url: str, execution_id: str) -> dict:
        deadline = time.monotonic() + FINISH_SECONDS
        while True:
            status, body = self.call("GET", f"{url}/api/sandbox/executions/{execution_id}")
            assert status == 200, body
            if body["status"] not in ("pending", "running"):
                return body
            assert time.monotonic() < deadline, f"{execution_id} did not finish: {body}"
            time.sleep(1)


def build_images() -> None:
    """The API and operator images, built (cached by content) and imported into the cluster."""
    subprocess.run([str(REPO / "hack" / "component-images.sh"), "build"], check=True, timeout=1800)


def install(name: str, *values: str) -> Release:
    """`helm install` into fresh namespaces, a client pod beside it; returns the release."""
    if not Path(KUBECONFIG).exists():
        pytest.fail(f"no cluster kubeconfig at {KUBECONFIG}: run `make cluster-up` first")
    build_images()
    namespace, sandbox_namespace = name, f"{name}-exec"
    kubectl("create", "namespace", namespace)
    kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted", "e2e=helm")
    helm("install", name, CHART, "--namespace", namespace, "--set", f"sandboxNamespace.name={sandbox_namespace}",
         *values, "--wait", "--timeout", INSTALL_TIMEOUT)
    secret = get_json("secret", f"{name}-code-sandbox-api-keys", "-n", namespace)
    release = Release(name, namespace, sandbox_namespace, base64.b64decode(secret["data"]["client-key"]).decode())
    tag = subprocess.run([str(REPO / "hack" / "component-images.sh"), "tag"], capture_output=True, text=True,
                         check=True).stdout.strip()
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(client_pod(f"localhost/sandbox/api:{tag}")))
    kubectl("wait", "-n", namespace, "--for=condition=Ready", "pod/client", "--timeout=120s")
    return release


def uninstall(release: Release) -> None:
    helm("uninstall", release.name, "--namespace", release.namespace, "--wait", "--timeout", "3m", check=False)
    kubectl("delete", "namespace", release.namespace, release.sandbox_namespace, "--ignore-not-found",
            "--wait=false", check=False)


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


@pytest.fixture(scope="module")
def release(cluster) -> Iterator[Release]:  # noqa: ARG001  (the cluster is up first)
    installed = install(f"sbxhelm-{uuid.uuid4().hex[:8]}", "--set", "api.replicas=2", "--set", "operator.replicas=2")
    try:
        yield installed
    finally:
        uninstall(installed)


def test_rendered_templates_are_accepted_by_the_api_server(release):
    rendered = helm("template", release.name, CHART, "--namespace", release.namespace,
                    "--set", f"sandboxNamespace.name={release.sandbox_namespace}").stdout
    done = kubectl("apply", "--dry-run=server", "-f", "-", input=rendered)
    assert "created (server dry run)" in done.stdout or "configured (server dry run)" in done.stdout, done.stdout


@pytest.mark.parametrize("language, code, stdout", [
    ("python", "import sys; print(sys.stdin.read().upper())", "HELLO\n\n"),
    ("javascript", "process.stdin.on('data', d => console.log(String(d).toUpperCase()))", "HELLO\n\n"),
    ("bash", "read line; echo \"${line^^}\"", "HELLO\n"),
])
def test_service_runs_each_language_for_a_pod_in_the_cluster(release, language, code, stdout):
    status, result = release.execute(release.service_url(), language, code, input_data="hello\n")
    assert status == 200, result
    assert (result["status"], result["stdout"], result["exit_code"]) == ("completed", stdout, 0), result


def test_helm_test_runs_an_execution_through_the_service(release):
    # The test pod asserts the execution's stdout itself and is deleted when it succeeds.
    done = helm("test", release.name, "--namespace", release.namespace, "--timeout", "5m")
    phases = [line.split()[-1] for line in done.stdout.splitlines() if line.startswith("Phase:")]
    assert phases == ["Succeeded", "Succeeded"], done.stdout


def test_execution_created_through_one_replica_is_read_through_the_other(release):
    first, second = release.api_pod_urls()
    status, accepted = release.execute(first, "python", "print('across replicas')", wait=False)
    assert status == 202, accepted
    result = release.wait_result(second, accepted["execution_id"])
    assert (result["status"], result["stdout"]) == ("completed", "across replicas\n")


# Runs in an API pod: connect to each HOST:PORT argument, print which ones connected.
PROBE = """
import json, os, socket, sys
reached = {}
for target in sys.argv[1:]:
    host, port = target.replace("KUBERNETES", os.environ["KUBERNETES_SERVICE_HOST"]).rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
        reached[target] = True
    except OSError:
        reached[target] = False
print(json.dumps(reached))
"""


def test_api_pods_reach_the_kubernetes_api_and_nothing_else(release):
    selector = f"app.kubernetes.io/instance={release.name},app.kubernetes.io/name="
    api = get_json("pods", "-n", release.namespace, "-l", selector + "api")["items"][0]
    # The operator's health port accepts anyone (its ingress rule), so only the API's egress can stop it.
    operator = get_json("pods", "-n", release.namespace, "-l", selector + "operator")["items"][0]
    other = f"{operator['status']['podIP']}:8080"
    out = kubectl("exec", "-n", release.namespace, api["metadata"]["name"], "--", "/opt/sandbox/bin/python", "-c",
                  PROBE, "KUBERNETES:443", other).stdout
    reached = json.loads(out)
    assert reached["KUBERNETES:443"] is True, "the API must reach the Kubernetes API"
    assert reached[other] is False, "the API's egress must stop at the Kubernetes API"


def test_exactly_one_operator_replica_acts(release):
    status, result = release.execute(release.service_url(), "python", "print('once')")
    assert (status, result["status"]) == (200, "completed"), result
    pods = get_json("pods", "-n", release.namespace, "-l", f"app.kubernetes.io/instance={release.name},app.kubernetes.io/name=operator")
    logs = [kubectl("logs", "-n", release.namespace, p["metadata"]["name"]).stdout for p in pods["items"]]
    assert len(logs) == 2
    acting = [log for log in logs if f"started: language=python" in log]
    assert len(acting) == 1, "exactly one replica starts executions"
    (waiting,) = [log for log in logs if log is not acting[0]]
    # The other replica never touched the execution: paused by peering (mandatory peering starts
    # paused, so a replica that sees a higher peer at once never logs the "Pausing" transition).
    assert result["execution_id"] in acting[0]
    assert result["execution_id"] not in waiting, waiting[-3000:]


def test_upgrade_adds_a_language_and_loses_no_execution_in_flight(release):
    url = release.service_url()
    status, accepted = release.execute(url, "python", "import time; time.sleep(15); print('survived')",
                                       timeout_seconds=60, wait=False)
    assert status == 202, accepted
    blocking: dict = {}
    waiter = threading.Thread(target=lambda: blocking.update(answer=release.execute(
        url, "python", "import time; time.sleep(10); print('waited')", timeout_seconds=30)))
    waiter.start()
    time.sleep(2)  # the blocking request is on its way before the rollout starts (ordering, not timing)
    python = yaml.safe_load((REPO / "operator" / "sandbox_operator" / "languages.yaml").read_text())["languages"]["python"]
    added = {**python, "aliases": ["py-unbuffered"], "command": ["python3", "-u", "{main}"]}
    helm("upgrade", release.name, CHART, "--namespace", release.namespace, "--reuse-values",
         "--set-json", f"languages.python-u={json.dumps(added)}", "--wait", "--timeout", INSTALL_TIMEOUT)
    waiter.join(timeout=FINISH_SECONDS)
    status, result = blocking["answer"]
    assert (status, result["status"], result["stdout"]) == (200, "completed", "waited\n"), result
    result = release.wait_result(url, accepted["execution_id"])
    assert (result["status"], result["stdout"]) == ("completed", "survived\n")
    status, languages = release.call("GET", f"{url}/api/sandbox/languages")
    assert "python-u" in json.dumps(languages)
    status, result = release.execute(url, "py-unbuffered", "print('new language')")
    assert (status, result["status"], result["stdout"]) == (200, "completed", "new language\n"), result


def test_uninstall_leaves_only_the_crds(release):
    helm("uninstall", release.name, "--namespace", release.namespace, "--wait", "--timeout", "3m")
    selector = f"app.kubernetes.io/instance={release.name}"
    kinds = ("deployments,replicasets,pods,jobs,services,configmaps,secrets,serviceaccounts,roles,rolebindings,"
             "networkpolicies,poddisruptionbudgets,clusterroles,clusterrolebindings")
    deadline = time.monotonic() + FINISH_SECONDS
    # Pods end after their grace period, the namespace after its contents: wait for both, bounded.
    while True:
        left = kubectl("get", kinds, "-A", "-l", selector, "-o", "name").stdout.split()
        namespace_left = kubectl("get", "namespace", release.sandbox_namespace, check=False).returncode == 0
        if not left and not namespace_left:
            break
        assert time.monotonic() < deadline, f"left behind: {left}, sandbox namespace: {namespace_left}"
        time.sleep(2)
    for crd in ("sandboxexecutions.sandbox.dev", "kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev"):
        kubectl("get", "crd", crd)
