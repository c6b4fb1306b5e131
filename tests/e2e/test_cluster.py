"""The local cluster itself (issue 3): node, runtime images, Pod Security, Service routing, NetworkPolicy.

Waits below are bounds against hanging (a slow machine passes, a stuck one fails), never timing checks.
"""

from __future__ import annotations

import time

import pytest
import yaml

from tests.e2e.kube import LANGUAGES_FILE, apply, get_json, kubectl

CATALOGUE = yaml.safe_load(LANGUAGES_FILE.read_text())["languages"]
PYTHON_IMAGE = CATALOGUE["python"]["image"]
# One line of each language, run by the interpreter the catalogue names.
HELLO = {
    "python": ["python3", "-c", "import sys; print('hello from python', sys.version_info[0])"],
    "javascript": ["node", "-e", "console.log('hello from node', process.versions.node.split('.')[0])"],
    "bash": ["bash", "-c", "echo hello from bash ${BASH_VERSINFO[0]}"],
}
# Connects to HOST:PORT and says whether a TCP connection could be opened (never fails itself).
PROBE = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()
    print("open")
except OSError as error:
    print("blocked", error)
"""


def restricted_container(name: str, image: str, command: list[str]) -> dict:
    """A container that satisfies the `restricted` Pod Security Standard."""
    return {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}},
    }


def restricted_pod_spec(*containers: dict, restart_policy: str = "Never") -> dict:
    return {
        "restartPolicy": restart_policy,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "runAsGroup": 65532,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": list(containers),
    }


def pod(name: str, spec: dict, labels: dict | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {}}, "spec": spec}


def eventually(probe, expected: str, what: str, seconds: float = 90) -> None:
    """Poll probe() until it returns expected; fail with the last answer after `seconds`."""
    deadline = time.monotonic() + seconds
    answer = probe()
    while answer != expected:
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: expected {expected!r}, still {answer!r} after {seconds} s")
        time.sleep(1)
        answer = probe()


def test_node_is_ready(cluster):  # noqa: ARG001  (up first)
    nodes = get_json("nodes")["items"]
    assert len(nodes) == 1
    conditions = {c["type"]: c["status"] for c in nodes[0]["status"]["conditions"]}
    assert conditions["Ready"] == "True", conditions
    assert nodes[0]["status"]["nodeInfo"]["kubeletVersion"] == "v1.34.4"


@pytest.mark.parametrize("language", sorted(HELLO))
def test_job_with_each_runtime_image_completes_and_its_logs_are_read(namespace: str, language: str):
    image = CATALOGUE[language]["image"]
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": f"hello-{language}"},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": 180,
            "template": {
                "spec": restricted_pod_spec(
                    restricted_container("main", image, HELLO[language]),
                    # The runner is Python: every runtime image must carry python3.
                    restricted_container("runner-python", image, ["python3", "-c", "print('python3 present')"]),
                )
            },
        },
    }
    apply(namespace, job)
    kubectl("-n", namespace, "wait", "--for=condition=Complete", f"job/hello-{language}", "--timeout=180s")
    # kubectl logs goes through the API server, which fetches them from the kubelet.
    main_log = kubectl("-n", namespace, "logs", f"job/hello-{language}", "-c", "main").stdout
    version = CATALOGUE[language]["version"].split(".")[0]
    assert main_log.strip() == f"hello from {'node' if language == 'javascript' else language} {version}"
    runner_log = kubectl("-n", namespace, "logs", f"job/hello-{language}", "-c", "runner-python").stdout
    assert runner_log.strip() == "python3 present"


def test_restricted_pod_runs_and_privileged_pod_is_refused(namespace: str):
    # The namespace enforces `restricted`, as every e2e namespace does.
    assert get_json("namespace", namespace)["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    restricted = pod("restricted", restricted_pod_spec(
        restricted_container("main", PYTHON_IMAGE, ["python3", "-c", "import os; print('uid', os.getuid())"])))
    apply(namespace, restricted)
    kubectl("-n", namespace, "wait", "--for=jsonpath={.status.phase}=Succeeded", "pod/restricted",
                        "--timeout=120s")
    assert kubectl("-n", namespace, "logs", "restricted").stdout.strip() == "uid 65532"

    privileged_container = {"name": "main", "image": PYTHON_IMAGE, "command": ["python3", "-c", "pass"],
                            "securityContext": {"privileged": True}}
    refused = apply(namespace, pod("privileged", {"containers": [privileged_container]}), check=False)
    assert refused.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in refused.stderr
    assert "privileged" in refused.stderr
    assert kubectl("-n", namespace, "get", "pod", "privileged", check=False).returncode != 0


def test_pod_reaches_the_api_server_through_the_kubernetes_service(namespace: str):
    # The pod calls the API server at the `kubernetes` Service's cluster IP (from the env the kubelet
    # injects) with its service account token, verifying the server against the cluster CA.
    script = """
import json, os, ssl, urllib.request
account = "/var/run/secrets/kubernetes.io/serviceaccount"
host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
request = urllib.request.Request(f"https://{host}:{port}/version",
                                 headers={"Authorization": "Bearer " + open(account + "/token").read()})
context = ssl.create_default_context(cafile=account + "/ca.crt")
context.check_hostname = False  # the certificate names the Service, we dial its IP
print(host, json.load(urllib.request.urlopen(request, context=context, timeout=10))["gitVersion"])
"""
    apply(namespace, pod("caller", restricted_pod_spec(
        restricted_container("main", PYTHON_IMAGE, ["python3", "-c", script]))))
    kubectl("-n", namespace, "wait", "--for=jsonpath={.status.phase}=Succeeded", "pod/caller",
                        "--timeout=120s")
    service_ip = kubectl("-n", "default", "get", "service", "kubernetes",
                                     "-o", "jsonpath={.spec.clusterIP}").stdout
    assert kubectl("-n", namespace, "logs", "caller").stdout.split() == [service_ip, "v1.34.4"]


def test_deny_all_network_policy_blocks_egress_and_removing_it_restores_traffic(namespace: str):
    server = restricted_container("main", PYTHON_IMAGE, ["python3", "-m", "http.server", "8080", "-d", "/tmp"])
    server["volumeMounts"] = [{"name": "tmp", "mountPath": "/tmp"}]
    server_spec = restricted_pod_spec(server, restart_policy="Always")
    server_spec["volumes"] = [{"name": "tmp", "emptyDir": {}}]
    apply(namespace, pod("server", server_spec, labels={"app": "server"}))
    client = restricted_container("main", PYTHON_IMAGE, ["python3", "-c", "import time; time.sleep(3600)"])
    apply(namespace, pod("client", restricted_pod_spec(client, restart_policy="Always"), labels={"app": "client"}))
    for name in ("server", "client"):
        kubectl("-n", namespace, "wait", "--for=condition=Ready", f"pod/{name}", "--timeout=120s")
    server_ip = kubectl("-n", namespace, "get", "pod", "server", "-o", "jsonpath={.status.podIP}").stdout
    api_ip = kubectl("-n", "default", "get", "service", "kubernetes", "-o", "jsonpath={.spec.clusterIP}").stdout
    targets = {"api server": (api_ip, "443"), "other pod": (server_ip, "8080")}

    def reachability() -> str:
        # kubectl exec, through the API server and the kubelet, runs each probe as a new connection.
        answers = []
        for target, (host, port) in targets.items():
            out = kubectl("-n", namespace, "exec", "client", "--", "python3", "-c", PROBE, host, port).stdout
            answers.append(f"{target}: {out.split()[0]}")
        return ", ".join(answers)

    eventually(reachability, "api server: open, other pod: open", "before any policy")
    deny_all_egress = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "deny-all-egress"},
        "spec": {"podSelector": {"matchLabels": {"app": "client"}}, "policyTypes": ["Egress"]},
    }
    apply(namespace, deny_all_egress)
    eventually(reachability, "api server: blocked, other pod: blocked", "with the deny-all egress policy")
    kubectl("-n", namespace, "delete", "networkpolicy", "deny-all-egress")
    eventually(reachability, "api server: open, other pod: open", "after removing the policy")
