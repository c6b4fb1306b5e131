"""The sandbox pod passes the Pod Security Standards `restricted` profile and every hardening item.

`restricted_violations` is a small checker of the restricted rules (baseline included), written from
the Pod Security Standards page; it is itself tested against pods that break each rule.
"""

from __future__ import annotations

import copy

import pytest

from sandbox_operator.builders import build_job_for
from sandbox_contract.catalogue import load_catalogue
from sandbox_contract.request import EffectiveLimits
from sandbox_operator.config import OperatorConfig

ALLOWED_VOLUME_TYPES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret",
}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range",
}


def restricted_violations(pod_spec: dict) -> list[str]:
    """Every rule of the `restricted` profile the pod spec breaks (empty when it passes)."""
    problems = []
    pod_context = pod_spec.get("securityContext") or {}
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(flag):
            problems.append(f"{flag} must be false")
    for sysctl in pod_context.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            problems.append(f"sysctl {sysctl.get('name')} is not safe")
    for volume in pod_spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= ALLOWED_VOLUME_TYPES:
            problems.append(f"volume {volume['name']} has a forbidden type {sorted(kinds - ALLOWED_VOLUME_TYPES)}")
    if pod_context.get("runAsUser") == 0:
        problems.append("pod runAsUser must not be 0")
    containers = [
        *(pod_spec.get("containers") or []), *(pod_spec.get("initContainers") or []),
        *(pod_spec.get("ephemeralContainers") or []),
    ]
    pod_seccomp = (pod_context.get("seccompProfile") or {}).get("type")
    for container in containers:
        name = container.get("name")
        context = container.get("securityContext") or {}
        if context.get("privileged"):
            problems.append(f"{name}: privileged")
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation must be false")
        run_as_non_root = context.get("runAsNonRoot", pod_context.get("runAsNonRoot"))
        if run_as_non_root is not True:
            problems.append(f"{name}: runAsNonRoot must be true")
        if context.get("runAsUser") == 0:
            problems.append(f"{name}: runAsUser must not be 0")
        seccomp = (context.get("seccompProfile") or {}).get("type", pod_seccomp)
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile must be RuntimeDefault or Localhost")
        capabilities = context.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            problems.append(f"{name}: capabilities must drop ALL")
        if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: may only add NET_BIND_SERVICE")
        if context.get("procMount", "Default") != "Default":
            problems.append(f"{name}: procMount must be Default")
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                problems.append(f"{name}: hostPort")
    return problems


def sandbox_pod_spec(config: OperatorConfig = OperatorConfig(), *, hand_off_spec: bool = True) -> dict:
    python = load_catalogue().find("python")
    limits = EffectiveLimits(timeout_seconds=5, max_memory_mb=128)
    job = build_job_for("exec-0123456789abcdef0123", language=python, limits=limits, config=config,
                        runner_configmap="sandbox-runner-0123456789abcdef", hand_off_spec=hand_off_spec)
    return job["spec"]["template"]["spec"]


@pytest.mark.parametrize("hand_off_spec", [True, False], ids=["with-tests", "without-tests"])
def test_sandbox_pod_passes_restricted(hand_off_spec):
    assert restricted_violations(sandbox_pod_spec(hand_off_spec=hand_off_spec)) == []


def test_sandbox_pod_with_runtime_class_and_placement_still_passes():
    config = OperatorConfig(
        runtime_class_name="gvisor", node_selector={"sandbox": "true"},
        tolerations=[{"key": "sandbox", "operator": "Exists", "effect": "NoSchedule"}],
    )
    pod = sandbox_pod_spec(config)
    assert pod["runtimeClassName"] == "gvisor"
    assert pod["nodeSelector"] == {"sandbox": "true"}
    assert pod["tolerations"][0]["key"] == "sandbox"
    assert restricted_violations(pod) == []


def _break(path: tuple, value):
    def mutate(pod: dict) -> None:
        target = pod
        for key in path[:-1]:
            target = target.setdefault(key, {}) if not isinstance(key, int) else target[key]
        target[path[-1]] = value
    return mutate


@pytest.mark.parametrize(
    "mutate",
    [
        _break(("hostNetwork",), True),
        _break(("hostPID",), True),
        _break(("containers", 0, "securityContext", "privileged"), True),
        _break(("containers", 0, "securityContext", "allowPrivilegeEscalation"), True),
        _break(("containers", 0, "securityContext", "runAsNonRoot"), False),
        _break(("containers", 0, "securityContext", "runAsUser"), 0),
        _break(("containers", 0, "securityContext", "seccompProfile"), {"type": "Unconfined"}),
        _break(("containers", 0, "securityContext", "capabilities"), {"drop": ["NET_RAW"]}),
        _break(("containers", 0, "securityContext", "capabilities"), {"drop": ["ALL"], "add": ["SYS_ADMIN"]}),
        _break(("volumes",), [{"name": "host", "hostPath": {"path": "/"}}]),
        _break(("initContainers",), [{"name": "init", "image": "x"}]),
    ],
    ids=["hostNetwork", "hostPID", "privileged", "escalation", "runAsNonRoot", "root-uid", "seccomp",
         "caps-drop", "caps-add", "hostPath", "unhardened-init-container"],
)
def test_checker_catches_each_violation(mutate):
    pod = copy.deepcopy(sandbox_pod_spec())
    mutate(pod)
    assert restricted_violations(pod)


def test_checker_requires_allow_privilege_escalation_explicitly_false():
    pod = copy.deepcopy(sandbox_pod_spec())
    del pod["containers"][0]["securityContext"]["allowPrivilegeEscalation"]
    assert restricted_violations(pod) == ["sandbox: allowPrivilegeEscalation must be false"]
