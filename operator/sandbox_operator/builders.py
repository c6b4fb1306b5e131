"""Pure builders of the objects behind one execution: its ConfigMap, its Job, and the namespace's
default-deny NetworkPolicy. Plain dicts in, plain dicts out; the handlers add owner references.
"""

from __future__ import annotations

import base64
import copy
import hashlib

import sandbox_runner
from sandbox_contract import crd
from sandbox_contract.catalogue import Language
from sandbox_contract.request import EffectiveLimits
from sandbox_contract import runner_spec
from sandbox_contract.runner_spec import DEFAULT_WORKDIR
from sandbox_operator.config import OperatorConfig

RUNNER_DIR = "/sandbox/runner"
RUNNER_FILE = "runner.py"
# The runner, one ConfigMap per namespace and runner version (named by its content, never changed).
RUNNER_CONFIGMAP_PREFIX = "sandbox-runner-"
SPEC_FILE = "spec.json.gz"  # gzip-compressed: a spec with 1 MiB of inputs fits in one ConfigMap
# With test cases the spec reaches the runner through a hand-off: the init container, which alone
# mounts the spec, copies it into an emptyDir the runner reads it from and deletes it in, before the
# program starts. So the program cannot read the other test cases' inputs the way it could a mounted
# file. Without test cases the spec holds nothing the program is not given anyway (its code, stdin,
# files, args and env), and the sandbox mounts it read-only: one container start less per pod.
SPEC_DIR = "/sandbox/spec"
HANDOFF_DIR = "/sandbox/handoff"
HANDOFF_SIZE_MB = 2  # a spec is at most a ConfigMap's 1 MiB
INIT_CONTAINER_NAME = "deliver-spec"
# Besides the work dir, what the program can write in a pod: emptied between test cases.
SCRATCH_PATHS = (*runner_spec.SCRATCH_PATHS, HANDOFF_DIR, "/dev/termination-log")
WORK_DIR = DEFAULT_WORKDIR  # the work emptyDir is mounted where every sandbox runs its program
SANDBOX_UID = 65532
CONTAINER_NAME = "sandbox"
# Time for the Job controller, the kubelet and the runner around the program's own limit.
DEADLINE_GRACE_SECONDS = 30
# The kubelet's port on the pod's node: one of the two destinations the isolation gate must find cut off.
KUBELET_PORT = 10250
# Disk the container may use: its logs only (the root filesystem is read-only, the work dir and /tmp
# are in memory); the runner's result line and its own messages stay far below this.
LOG_STORAGE_MB = 16


def runner_source() -> str:
    """The runner module's source, shipped in a ConfigMap so any image with python3 can run it."""
    return sandbox_runner.RUNNER_PATH.read_text()


def runner_configmap_name(runner: str) -> str:
    return RUNNER_CONFIGMAP_PREFIX + hashlib.sha256(runner.encode("utf-8")).hexdigest()[:16]


def build_runner_configmap(runner: str) -> dict:
    """The ConfigMap every sandbox pod of a namespace mounts the runner from, read-only.

    Immutable and named by its content: a new runner gets a new ConfigMap, and no pod's runner ever
    changes under it. Shared, so it has no owner; one per runner version stays in the namespace.
    """
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": runner_configmap_name(runner), "labels": {crd.LABEL_MANAGED_BY: crd.MANAGED_BY}},
        "immutable": True,
        "data": {RUNNER_FILE: runner},
    }


def child_labels(execution_name: str, language: Language) -> dict[str, str]:
    """Labels on the ConfigMap, the Job and its pod: who manages them and which execution they serve."""
    return {
        crd.LABEL_MANAGED_BY: crd.MANAGED_BY,
        crd.LABEL_EXECUTION: execution_name,
        crd.LABEL_LANGUAGE: crd.label_value(language.name),
    }


def build_configmap_for(execution_name: str, *, language: Language, spec: dict) -> dict:
    """The ConfigMap holding the runner's spec (code, stdin, files, test inputs), compressed; only
    the init container mounts it."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": crd.child_name(execution_name),
            "labels": child_labels(execution_name, language),
        },
        # Immutable: the kubelet need not watch it, and nobody can swap the code under a running pod.
        "immutable": True,
        "binaryData": {SPEC_FILE: base64.b64encode(crd.compress(spec)).decode("ascii")},
    }


def runner_command(config: OperatorConfig, *, hand_off_spec: bool) -> list[str]:
    """The container's command: the runner, behind its isolation gate unless that is switched off (0),
    reading the spec where it is mounted or, handed off, deleting it once read."""
    spec_dir = HANDOFF_DIR if hand_off_spec else SPEC_DIR
    return sandbox_runner.runner_command(f"{RUNNER_DIR}/{RUNNER_FILE}", f"{spec_dir}/{SPEC_FILE}",
                                         isolation_wait_seconds=config.isolation_wait_seconds or None,
                                         remove_spec=hand_off_spec)


def memory_limit_mb(memory_mb: int, config: OperatorConfig) -> int:
    """The container's memory limit: the program's grant, the runner's headroom, and the work dir and
    /tmp, which are tmpfs (`medium: Memory`) whose pages are charged to the container's memory. So a
    full work dir never eats into the program's grant, and no write can outgrow what the kernel enforces.
    """
    return memory_mb + config.runner_memory_headroom_mb + config.work_dir_size_mb + config.tmp_size_mb


def build_job_for(
    execution_name: str,
    *,
    language: Language,
    limits: EffectiveLimits,
    config: OperatorConfig,
    runner_configmap: str,
    hand_off_spec: bool,
) -> dict:
    """The Job running one locked-down pod: the runner as entrypoint, no retries, hard limits.
    `hand_off_spec` (for test cases): the spec comes through the init container (see SPEC_DIR)."""
    name = crd.child_name(execution_name)
    labels = child_labels(execution_name, language)
    memory_limit = f"{memory_limit_mb(limits.max_memory_mb, config)}Mi"
    storage_limit = f"{LOG_STORAGE_MB}Mi"
    resources = {
        # Requests equal limits for memory so the scheduler never overcommits a sandbox.
        "requests": {"cpu": config.cpu_request, "memory": memory_limit, "ephemeral-storage": storage_limit},
        "limits": {"cpu": config.cpu_limit, "memory": memory_limit, "ephemeral-storage": storage_limit},
    }
    security_context = {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": SANDBOX_UID,
        "runAsGroup": SANDBOX_UID,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    deliver_spec = {
        "name": INIT_CONTAINER_NAME,
        "image": language.image,
        "imagePullPolicy": config.image_pull_policy,
        "command": ["cp", f"{SPEC_DIR}/{SPEC_FILE}", f"{HANDOFF_DIR}/{SPEC_FILE}"],
        # Copies: each container's settings stand alone (one edited never changes the other).
        "resources": copy.deepcopy(resources),
        "securityContext": dict(security_context),
        "volumeMounts": [
            {"name": "spec", "mountPath": SPEC_DIR, "readOnly": True},
            {"name": "handoff", "mountPath": HANDOFF_DIR},
        ],
    }
    container = {
        "name": CONTAINER_NAME,
        "image": language.image,
        "imagePullPolicy": config.image_pull_policy,
        "command": runner_command(config, hand_off_spec=hand_off_spec),
        "workingDir": WORK_DIR,
        # For the isolation gate (the runner gives the program an environment of its own).
        "env": [
            {"name": "SANDBOX_NODE_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
            {"name": "SANDBOX_KUBELET_PORT", "value": str(KUBELET_PORT)},
        ],
        "resources": resources,
        "securityContext": security_context,
        "volumeMounts": [
            {"name": "runner", "mountPath": RUNNER_DIR, "readOnly": True},
            {"name": "handoff", "mountPath": HANDOFF_DIR} if hand_off_spec
            else {"name": "spec", "mountPath": SPEC_DIR, "readOnly": True},
            {"name": "work", "mountPath": WORK_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    pod_spec = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "hostNetwork": False,
        "hostPID": False,
        "hostIPC": False,
        "shareProcessNamespace": False,
        # No cluster DNS: the sandbox has no network, and a resolver that answers nothing fails fast.
        "dnsPolicy": "None",
        "dnsConfig": {"nameservers": ["127.0.0.1"]},
        "terminationGracePeriodSeconds": 2,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": SANDBOX_UID,
            "runAsGroup": SANDBOX_UID,
            "fsGroup": SANDBOX_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [
            {"name": "runner", "configMap": {"name": runner_configmap, "defaultMode": 0o444}},
            {"name": "spec", "configMap": {"name": name, "defaultMode": 0o444}},
            *([{"name": "handoff", "emptyDir": {"medium": "Memory", "sizeLimit": f"{HANDOFF_SIZE_MB}Mi"}}]
              if hand_off_spec else []),
            # tmpfs sized by the kubelet from sizeLimit: a write past it fails at once with ENOSPC,
            # instead of filling the node's disk until an eviction notices (see memory_limit_mb).
            {"name": "work", "emptyDir": {"medium": "Memory", "sizeLimit": f"{config.work_dir_size_mb}Mi"}},
            {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": f"{config.tmp_size_mb}Mi"}},
        ],
    }
    if hand_off_spec:
        pod_spec["initContainers"] = [deliver_spec]
    if config.runtime_class_name:
        pod_spec["runtimeClassName"] = config.runtime_class_name
    if config.node_selector:
        pod_spec["nodeSelector"] = dict(config.node_selector)
    if config.tolerations:
        pod_spec["tolerations"] = list(config.tolerations)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "backoffLimit": 0,
            "completions": 1,
            "parallelism": 1,
            "activeDeadlineSeconds": config.setup_deadline_seconds + limits.deadline_seconds + DEADLINE_GRACE_SECONDS,
            "ttlSecondsAfterFinished": config.job_ttl_seconds,
            "template": {
                "metadata": {"labels": {**labels, crd.LABEL_SANDBOX: "true"}},
                "spec": pod_spec,
            },
        },
    }


def build_network_policy() -> dict:
    """Deny all ingress and egress for every sandbox pod in the namespace (one per namespace)."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": crd.NETWORK_POLICY_NAME,
            "labels": {crd.LABEL_MANAGED_BY: crd.MANAGED_BY},
        },
        "spec": {
            "podSelector": {"matchLabels": {crd.LABEL_SANDBOX: "true"}},
            "policyTypes": ["Ingress", "Egress"],
        },
    }
