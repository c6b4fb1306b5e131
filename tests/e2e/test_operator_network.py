"""A sandbox reaches nothing: not the API server, not another pod, not the operator on the host.

Each attempt is first shown to work from an ordinary pod in the same namespace (the control), so the
test fails if the sandbox's isolation breaks, not merely if the network is down.
"""

from __future__ import annotations

import json

import yaml

from tests.e2e.kube import apply, execution, get_json, kubectl, wait_finished, wait_until

IMAGE = "localhost/sandbox/python:3.11-bookworm"
RESTRICTED = {
    "allowPrivilegeEscalation": False, "runAsNonRoot": True, "runAsUser": 65532,
    "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
}
# Tries each target and prints {target: "open" | error}; short timeouts, the answer is binary.
PROBE = """
import json, socket, sys
targets = json.loads(sys.argv[1] if len(sys.argv) > 1 else open('targets.json').read())
result = {}
for host, port in targets:
    try:
        socket.create_connection((host, port), timeout=3).close()
        result[f"{host}:{port}"] = "open"
    except OSError as error:
        result[f"{host}:{port}"] = type(error).__name__
print(json.dumps(result))
"""


def pod(name: str, command: list[str], labels: dict | None = None) -> str:
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {"app": name}},
        "spec": {
            "restartPolicy": "Never", "automountServiceAccountToken": False,
            "containers": [{"name": "main", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
                            "command": command, "securityContext": RESTRICTED}],
        },
    })


def targets_for(ns: str, operator) -> list[tuple[str, int]]:
    apply(ns, pod("listener", ["python3", "-m", "http.server", "8080"]))
    kubectl("-n", ns, "wait", "--for=condition=Ready", "pod/listener", "--timeout=120s")
    listener_ip = get_json("-n", ns, "pod/listener")["status"]["podIP"]
    service = get_json("-n", "default", "service/kubernetes")["spec"]
    endpoints = get_json("-n", "default", "endpoints/kubernetes")["subsets"][0]
    node_ip = get_json("nodes")["items"][0]["status"]["addresses"][0]["address"]
    return [
        (listener_ip, 8080),
        (service["clusterIP"], service["ports"][0]["port"]),
        (endpoints["addresses"][0]["ip"], endpoints["ports"][0]["port"]),
        (node_ip, operator.metrics_port),
    ]


def test_sandbox_reaches_no_pod_no_api_server_no_operator(ns, operator):
    targets = targets_for(ns, operator)
    # The control: an ordinary pod in the same namespace reaches every target.
    apply(ns, pod("control", ["python3", "-c", PROBE, json.dumps(targets)]))
    wait_until(lambda: get_json("-n", ns, "pod/control")["status"].get("phase") in ("Succeeded", "Failed"),
               120, "the control pod finished")
    control = json.loads(kubectl("-n", ns, "logs", "pod/control").stdout)
    assert set(control.values()) == {"open"}, f"the control pod could not reach every target: {control}"
    # The sandbox: the same probe through a SandboxExecution reaches none of them.
    apply(ns, execution(
        "probe", code=PROBE, files=[{"name": "targets.json", "content": json.dumps(targets)}], timeoutSeconds=60,
    ))
    status = wait_finished(ns, "probe")["status"]
    assert status["phase"] == "completed", status
    sandbox = json.loads(status["stdout"])
    assert len(sandbox) == len(targets)
    assert "open" not in sandbox.values(), f"the sandbox reached: {sandbox}"
    policy = get_json("-n", ns, "networkpolicy/sandbox-default-deny")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
