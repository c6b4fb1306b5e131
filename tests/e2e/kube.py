"""Helpers for the end-to-end tests: kubectl and helm against the local cluster, SandboxExecution
manifests, waits. The fixtures are in conftest.py."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
CLUSTER_DIR = Path(os.environ.get("SANDBOX_CLUSTER_DIR", "/var/lib/sandbox-cluster"))
KUBECONFIG = str(CLUSTER_DIR / "kubeconfig")
LANGUAGES_FILE = REPO / "contract" / "sandbox_contract" / "languages.yaml"
CHART = REPO / "charts" / "code-sandbox"
SETUP_DEADLINE_SECONDS = 120  # the production default: 50 pods starting at once on 2 CPUs need it
# Waits are bounds against hanging, not timing assertions: a slow machine passes, a stuck one fails.
FINISH_SECONDS = 240


class CommandError(subprocess.CalledProcessError):
    """kubectl or helm exited non-zero; the message carries its output."""

    def __str__(self) -> str:
        return f"{Path(self.cmd[0]).name} {' '.join(self.cmd[3:])} failed ({self.returncode}):\n{self.stderr}{self.output}"


def _run(tool: str, args: tuple[str, ...], *, input: str | None, check: bool, timeout: float) -> subprocess.CompletedProcess:
    command = [str(CLUSTER_DIR / "bin" / tool), "--kubeconfig", KUBECONFIG, *args]
    completed = subprocess.run(command, input=input, capture_output=True, text=True, timeout=timeout)
    if check and completed.returncode != 0:
        raise CommandError(completed.returncode, command, completed.stdout, completed.stderr)
    return completed


def kubectl(*args: str, input: str | None = None, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the cluster's kubectl with its admin kubeconfig; text output; CommandError on failure if check."""
    return _run("kubectl", args, input=input, check=check, timeout=timeout)


def helm(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the cluster's helm with its admin kubeconfig; text output; CommandError on failure if check."""
    return _run("helm", args, input=None, check=check, timeout=timeout)


def get_json(*args: str) -> dict:
    """`kubectl get ARGS -o json`, parsed."""
    return json.loads(kubectl("get", *args, "-o", "json").stdout)


def apply(namespace: str, *manifests: str | dict, check: bool = True) -> subprocess.CompletedProcess:
    """`kubectl -n NAMESPACE apply -f -` of the manifests (YAML text or dicts)."""
    documents = [m if isinstance(m, str) else yaml.safe_dump(m) for m in manifests]
    return kubectl("-n", namespace, "apply", "-f", "-", input="---\n".join(documents), check=check)


def wait_until(predicate: Callable, seconds: float, what: str):
    """Poll predicate() until it is truthy and return that; fail naming `what` after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"{what} did not happen within {seconds} s")


def events_for(namespace: str, name: str) -> list[dict]:
    return get_json("events", "-n", namespace, "--field-selector", f"involvedObject.name={name}")["items"]


# --- SandboxExecutions ---------------------------------------------------------------------------

def execution_body(name: str, language: str = "python", code: str = "print('hello')", *,
                   metadata: dict | None = None, **spec) -> dict:
    """A SandboxExecution; `metadata` adds to its name (labels, annotations)."""
    return {"apiVersion": "sandbox.dev/v1alpha1", "kind": "SandboxExecution",
            "metadata": {"name": name, **(metadata or {})}, "spec": {"language": language, "code": code, **spec}}


def execution(name: str, language: str = "python", code: str = "print('hello')", **spec) -> str:
    """A SandboxExecution manifest as YAML."""
    return yaml.safe_dump(execution_body(name, language, code, **spec))


def wait_finished(namespace: str, name: str, seconds: int = FINISH_SECONDS) -> dict:
    """`kubectl -n NAMESPACE wait --for=condition=Finished sbx/NAME`, then the resource."""
    kubectl("-n", namespace, "wait", "--for=condition=Finished", f"sbx/{name}", f"--timeout={seconds}s")
    return get_json("-n", namespace, f"sbx/{name}")


# --- Helm releases -------------------------------------------------------------------------------

INSTALL_TIMEOUT = "6m"  # a bound against hanging, not a timing assertion
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


@dataclass
class Release:
    """A release of the chart, named after its namespace, and a client pod beside it."""

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
