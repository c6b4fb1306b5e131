"""The Helm chart installed into the real cluster and called from a pod inside it.

One release per module, in its own namespaces (a fresh one for the components, named like the
release, and `<that>-exec` for the executions), with two API and two operator replicas. The client is a pod in the release's
namespace running python's standard HTTP client against the Service or one API pod; the test
reads what it prints. The last test uninstalls the release and checks what is left.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest
import yaml

from tests.e2e.kube import CHART, FINISH_SECONDS, INSTALL_TIMEOUT, LANGUAGES_FILE, Release, get_json, helm, kubectl


@pytest.fixture(scope="module")
def release(installed_release, request: pytest.FixtureRequest) -> Iterator[Release]:
    """One release for the module, two API and two operator replicas."""
    with installed_release(request.node.nodeid, "--set", "api.replicas=2", "--set", "operator.replicas=2") as installed:
        yield installed


def test_rendered_templates_are_accepted_by_the_api_server(release):
    rendered = helm("template", release.name, str(CHART), "--namespace", release.namespace,
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
    python = yaml.safe_load(LANGUAGES_FILE.read_text())["languages"]["python"]
    added = {**python, "aliases": ["py-unbuffered"], "run": ["python3", "-u", "{main}"]}
    # A `languages` value replaces the shipped catalogue whole: give it (a values file) and the new entry.
    helm("upgrade", release.name, str(CHART), "--namespace", release.namespace, "--reuse-values",
         "-f", str(LANGUAGES_FILE), "--set-json", f"languages.python-u={json.dumps(added)}",
         "--wait", "--timeout", INSTALL_TIMEOUT)
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
