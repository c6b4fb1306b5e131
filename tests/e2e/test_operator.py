"""The operator on the real cluster: kubectl apply, get, wait; validation; hardening; retention.

The operator runs as a real process on the host (admin kubeconfig), watching only this suite's
namespaces (`sbxop-*`), each labelled to enforce the `restricted` Pod Security Standard.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.serving import free_port, wait_until_serving

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CLUSTER_DIR = Path(os.environ.get("SANDBOX_CLUSTER_DIR", "/var/lib/sandbox-cluster"))
KUBECONFIG = str(CLUSTER_DIR / "kubeconfig")
KUBECTL = str(CLUSTER_DIR / "bin" / "kubectl")
NAMESPACE_PREFIX = "sbxop-"
SETUP_DEADLINE_SECONDS = 120  # the production default: 50 pods starting at once on 2 CPUs need it
# Waits are bounds against hanging, not timing assertions: a slow machine passes, a stuck one fails.
FINISH_SECONDS = 240


def kubectl(*args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run kubectl with the admin kubeconfig; output as text."""
    completed = subprocess.run(
        [KUBECTL, "--kubeconfig", KUBECONFIG, *args], input=input, capture_output=True, text=True, timeout=300
    )
    if check and completed.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed:\n{completed.stdout}\n{completed.stderr}")
    return completed


def get_json(*args: str) -> dict:
    return json.loads(kubectl("get", *args, "-o", "json").stdout)


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
                env={**self.env, "SANDBOX_METRICS_PORT": str(self.metrics_port)}, stdout=log, stderr=subprocess.STDOUT,
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


@pytest.fixture(scope="session")
def sandbox_crd(request) -> None:
    """The CRD from the chart, applied and established, on the cluster the e2e fixtures bring up."""
    try:
        request.getfixturevalue("cluster")  # tests/e2e/conftest.py: starts the cluster or reuses it
    except pytest.FixtureLookupError:
        pass
    if not Path(KUBECONFIG).exists():
        pytest.fail(f"no cluster kubeconfig at {KUBECONFIG}: run `make cluster-up` first")
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "charts" / "code-sandbox" / "crds" / "sandboxexecutions.yaml"))
    kubectl("wait", "--for=condition=Established", "crd/sandboxexecutions.sandbox.dev", "--timeout=60s")


_SHARED: dict[str, OperatorProcess] = {}


@pytest.fixture(scope="session")
def operator(request, sandbox_crd, tmp_path_factory) -> OperatorProcess:
    """The operator for this suite's namespaces, with a catalogue that adds a language with no image.

    One process for the whole run even though several modules import this fixture: two operators
    on the same namespaces would both act.
    """
    if "operator" in _SHARED:
        return _SHARED["operator"]
    workdir = tmp_path_factory.mktemp("operator")
    catalogue = yaml.safe_load((REPO / "operator" / "sandbox_operator" / "languages.yaml").read_text())
    catalogue["languages"]["ghost"] = {
        "version": "0", "image": "localhost/sandbox/ghost:0.0-missing", "command": ["python3", "{main}"],
        "main_file": "main.py",
    }
    languages = workdir / "languages.yaml"
    languages.write_text(yaml.safe_dump(catalogue))
    env = {
        **os.environ, "KUBECONFIG": KUBECONFIG, "SANDBOX_NAMESPACES": f"{NAMESPACE_PREFIX}*",
        "SANDBOX_SETUP_DEADLINE_SECONDS": str(SETUP_DEADLINE_SECONDS), "SANDBOX_LANGUAGES_FILE": str(languages),
        # The dev node has 2 CPUs: at the default 100m request only ~19 sandboxes fit at once, and the
        # 50-at-once test would see the rest wait past the (short) setup deadline.
        "SANDBOX_CPU_REQUEST": "25m",
    }
    process = OperatorProcess(env, workdir / "operator.log")
    process.start()
    request.config.add_cleanup(process.stop)
    _SHARED["operator"] = process
    return process


def _delete_namespace(name: str) -> None:
    # Finished executions carry the operator's finalizer (kopf's, for their retention daemon); remove it
    # so the namespace can go even once the operator has stopped. Deleted first: kopf re-adds a
    # finalizer removed from a live object, but no finalizer can be added to one being deleted.
    kubectl("delete", "sbx", "--all", "-n", name, "--wait=false", check=False)
    listing = kubectl("get", "sbx", "-n", name, "-o", "name", check=False).stdout.split()
    for item in listing:
        kubectl("patch", "-n", name, item, "--type=merge", "-p", '{"metadata":{"finalizers":null}}', check=False)
    kubectl("delete", "namespace", name, "--wait=false", check=False)


def make_namespace() -> str:
    name = f"{NAMESPACE_PREFIX}{uuid.uuid4().hex[:10]}"
    kubectl("create", "namespace", name)
    kubectl("label", "namespace", name, "pod-security.kubernetes.io/enforce=restricted",
            "pod-security.kubernetes.io/enforce-version=latest", "app.kubernetes.io/part-of=sandbox-e2e")
    return name


@pytest.fixture
def ns(operator) -> Iterator[str]:
    """A fresh namespace the operator watches; restricted PSS enforced."""
    name = make_namespace()
    yield name
    _delete_namespace(name)


def execution(name: str, language: str = "python", code: str = "print('hello')", **spec) -> str:
    """A SandboxExecution manifest as YAML."""
    return yaml.safe_dump({
        "apiVersion": "sandbox.dev/v1alpha1", "kind": "SandboxExecution",
        "metadata": {"name": name}, "spec": {"language": language, "code": code, **spec},
    })


def wait_finished(ns: str, name: str, seconds: int = FINISH_SECONDS) -> dict:
    kubectl("wait", "-n", ns, "--for=condition=Finished", f"sbx/{name}", f"--timeout={seconds}s")
    return get_json("-n", ns, f"sbx/{name}")


def wait_until(predicate, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"{what} did not happen within {seconds} s")


def events_for(ns: str, name: str) -> list[dict]:
    return get_json("events", "-n", ns, "--field-selector", f"involvedObject.name={name}")["items"]


# --- tests ----------------------------------------------------------------------------------------

def test_kubectl_apply_of_the_example_completes_and_shows_in_get(ns):
    kubectl("apply", "-n", ns, "-f", str(REPO / "examples" / "hello.yaml"))
    resource = wait_finished(ns, "hello")
    status = resource["status"]
    assert status["phase"] == "completed", status
    assert status["stdout"] == "Hello, Sandbox!\n"
    assert status["exitCode"] == 0
    assert status["outputFiles"] == [{"name": "greeting.txt", "content": "Sandbox", "encoding": "utf-8"}]
    assert status["podName"].startswith("sbx-hello-")
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Finished"]["status"] == "True" and conditions["Succeeded"]["status"] == "True"
    table = kubectl("get", "sbx", "-n", ns).stdout
    header, row = table.splitlines()[:2]
    assert header.split()[:5] == ["NAME", "LANGUAGE", "PHASE", "EXIT", "DURATION-MS"]
    assert row.split()[:4] == ["hello", "python", "completed", "0"]
    # Children are cleaned up once the result is in status; an Event tells what happened.
    wait_until(lambda: not kubectl("get", "job,configmap", "-n", ns, "-l", "sandbox.dev/execution=hello",
                                   "-o", "name").stdout.strip(), 60, "children deleted")
    assert any(e["reason"] == "Completed" for e in events_for(ns, "hello"))


def test_failures_are_terminal_and_classified(ns):
    kubectl("apply", "-n", ns, "-f", "-", input="---\n".join([
        execution("exits-3", code="import sys; sys.exit(3)"),
        execution("sleeps", code="import time; time.sleep(60)", timeoutSeconds=2),
        execution("cobol", language="cobol"),
    ]))
    exits = wait_finished(ns, "exits-3")["status"]
    assert (exits["phase"], exits["exitCode"]) == ("error_runtime", 3)
    assert {c["type"]: c["status"] for c in exits["conditions"]}["Succeeded"] == "False"
    assert wait_finished(ns, "sleeps")["status"]["phase"] == "timeout"
    cobol = wait_finished(ns, "cobol")["status"]
    assert cobol["phase"] == "error_setup" and "unsupported language 'cobol'" in cobol["reason"]


def test_missing_image_ends_error_setup_within_the_setup_deadline(ns):
    kubectl("apply", "-n", ns, "-f", "-", input=execution("ghost", language="ghost"))
    status = wait_finished(ns, "ghost", seconds=SETUP_DEADLINE_SECONDS + 60)["status"]
    assert status["phase"] == "error_setup", status
    assert "ghost" in status["reason"] or "Image" in status["reason"], status["reason"]


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"language": "python", "code": "1", "timeoutSeconds": 0}, "timeoutSeconds"),
        ({"language": "python", "code": "1", "maxMemoryMb": 1}, "maxMemoryMb"),
        ({"language": "py thon", "code": "1"}, "spec.language"),
        ({"language": "python"}, "spec.code: Required value"),
        ({"language": "python", "code": "1", "files": [{"name": "../etc/passwd", "content": "x"}]}, "must not contain '..'"),
        ({"language": "python", "code": "1", "files": [{"name": "/abs", "content": "x"}]}, "must be relative"),
        ({"language": "python", "code": "1", "files": [{"name": "a", "content": "x", "encoding": "rot13"}]}, "encoding"),
        ({"language": "python", "code": "1", "shell": True}, "unknown field"),
    ],
    ids=["timeout", "memory", "language", "no-code", "dotdot", "absolute", "encoding", "unknown-field"],
)
def test_invalid_resources_are_refused_with_a_readable_message(ns, spec, message):
    manifest = yaml.safe_dump({"apiVersion": "sandbox.dev/v1alpha1", "kind": "SandboxExecution",
                               "metadata": {"name": "bad"}, "spec": spec})
    refused = kubectl("apply", "-n", ns, "-f", "-", input=manifest, check=False)
    assert refused.returncode != 0
    assert message in refused.stderr, refused.stderr


def test_spec_is_immutable(ns):
    kubectl("apply", "-n", ns, "-f", "-", input=execution("fixed", code="print(1)"))
    changed = kubectl("apply", "-n", ns, "-f", "-", input=execution("fixed", code="print(2)"), check=False)
    assert changed.returncode != 0 and "spec is immutable" in changed.stderr


def test_sandbox_pod_is_locked_down_inside(ns):
    """Runs under enforce=restricted (else the pod would be refused) with no token, uid 65532, read-only /."""
    code = (
        "import os, json\n"
        "def writable(path):\n"
        "    try:\n"
        "        open(path, 'w').close(); return True\n"
        "    except OSError:\n"
        "        return False\n"
        "print(json.dumps({'uid': os.getuid(), 'gid': os.getgid(),\n"
        "  'token': os.path.exists('/var/run/secrets/kubernetes.io/serviceaccount'),\n"
        "  'root_writable': writable('/usr/owned'), 'tmp_writable': writable('/tmp/ok'),\n"
        "  'caps': [l for l in open('/proc/self/status') if l.startswith('CapEff')][0].split()[1],\n"
        "  'no_new_privs': [l for l in open('/proc/self/status') if l.startswith('NoNewPrivs')][0].split()[1]}))\n"
    )
    kubectl("apply", "-n", ns, "-f", "-", input=execution("inside", code=code))
    status = wait_finished(ns, "inside")["status"]
    assert status["phase"] == "completed", status
    facts = json.loads(status["stdout"])
    assert facts == {"uid": 65532, "gid": 65532, "token": False, "root_writable": False, "tmp_writable": True,
                     "caps": "0000000000000000", "no_new_privs": "1"}


def test_retention_deletes_finished_executions(ns):
    kubectl("apply", "-n", ns, "-f", "-", input=execution("short-lived", ttlSecondsAfterFinished=0))
    # It may be gone before anyone reads it; the Event outlives it and tells how it ended.
    wait_until(lambda: any(e["reason"] == "Completed" for e in events_for(ns, "short-lived")), FINISH_SECONDS,
               "the execution completed")
    wait_until(lambda: kubectl("get", "sbx/short-lived", "-n", ns, check=False).returncode != 0, 90,
               "the finished execution deleted after its retention")


def test_deleting_a_running_execution_deletes_its_children(ns):
    kubectl("apply", "-n", ns, "-f", "-", input=execution("doomed", code="import time; time.sleep(50)", timeoutSeconds=60))
    wait_until(lambda: get_json("-n", ns, "sbx/doomed").get("status", {}).get("phase") == "running", 120, "running")
    kubectl("delete", "-n", ns, "sbx/doomed", "--wait=true", "--timeout=60s")
    wait_until(lambda: not kubectl("get", "job,configmap,pod", "-n", ns, "-l", "sandbox.dev/execution=doomed",
                                   "-o", "name").stdout.strip(), 120, "children garbage-collected")


def test_operator_killed_mid_execution_completes_once(ns, operator):
    kubectl("apply", "-n", ns, "-f", "-", input=execution("survivor", code="import time; time.sleep(8); print('done')",
                                                            timeoutSeconds=30))
    running = wait_until(lambda: get_json("-n", ns, "sbx/survivor").get("status", {}).get("phase") == "running"
                         and get_json("-n", ns, "sbx/survivor")["status"], 120, "running")
    operator.kill()
    jobs = get_json("jobs", "-n", ns, "-l", "sandbox.dev/execution=survivor")["items"]
    operator.start()
    status = wait_finished(ns, "survivor")["status"]
    assert status["phase"] == "completed" and status["stdout"] == "done\n"
    assert len(jobs) == 1
    assert status["podName"] == running["podName"], "the pod that ran before the kill is the one that finished"
    completed_events = [e for e in events_for(ns, "survivor") if e["reason"] == "Completed"]
    assert len(completed_events) == 1 and completed_events[0].get("count", 1) == 1


def test_operator_killed_while_creating_children_creates_one_job(ns, operator):
    kubectl("apply", "-n", ns, "-f", "-", input=execution("early", code="print('once')"))
    operator.kill()  # most likely before or during the create handler
    operator.start()
    status = wait_finished(ns, "early")["status"]
    assert status["phase"] == "completed" and status["stdout"] == "once\n"
    assert len([e for e in events_for(ns, "early") if e["reason"] == "Completed"]) == 1
    # The job controller records every pod it creates; one Job ran exactly one pod.
    created = [e for e in get_json("events", "-n", ns)["items"]
               if e["reason"] == "SuccessfulCreate" and e["involvedObject"]["name"] == "sbx-early"]
    assert len(created) == 1 and created[0].get("count", 1) == 1
