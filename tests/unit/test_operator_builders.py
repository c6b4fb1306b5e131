"""The ConfigMap, Job and NetworkPolicy builders: every hardening item of DESIGN.md, on plain objects."""

from __future__ import annotations

import base64
import gzip
import json

import pytest

from sandbox_contract import crd
from sandbox_contract.catalogue import load_catalogue
from sandbox_contract.request import EffectiveLimits, InputFile, InvalidSpecError
from sandbox_contract.runner_spec import build_runner_spec
from sandbox_operator.builders import (
    WORK_DIR,
    build_configmap_for,
    build_job_for,
    build_network_policy,
    build_runner_configmap,
    runner_configmap_name,
    runner_source,
)
from sandbox_operator.config import OperatorConfig

NAME = "exec-0123456789abcdef0123"
CATALOGUE = load_catalogue()
PYTHON = CATALOGUE.find("python")
RUNNER_CONFIGMAP = runner_configmap_name(runner_source())


def job(config: OperatorConfig = OperatorConfig(), timeout: int = 5, memory: int = 128, *, tests: bool = False) -> dict:
    limits = EffectiveLimits(timeout_seconds=timeout, max_memory_mb=memory)
    return build_job_for(NAME, language=PYTHON, limits=limits, config=config, runner_configmap=RUNNER_CONFIGMAP,
                         hand_off_spec=tests)


def runner_spec(spec: dict) -> dict:
    """The runner's spec for a SandboxExecution's spec, as the operator builds it."""
    request = crd.request_from_spec(spec, catalogue=CATALOGUE, limits=OperatorConfig().limits)
    return build_runner_spec(request, workdir=WORK_DIR)


def test_children_have_deterministic_names_and_labels():
    built = job()
    spec = runner_spec({"language": "python", "code": "print(1)"})
    configmap = build_configmap_for(NAME, language=PYTHON, spec=spec)
    assert built["metadata"]["name"] == configmap["metadata"]["name"] == "sbx-" + NAME
    assert built == job(), "the same execution must always give the same Job"
    for labels in (built["metadata"]["labels"], configmap["metadata"]["labels"]):
        assert labels[crd.LABEL_EXECUTION] == NAME
        assert labels[crd.LABEL_MANAGED_BY] == crd.MANAGED_BY
        assert labels[crd.LABEL_LANGUAGE] == "python"
    assert built["spec"]["template"]["metadata"]["labels"][crd.LABEL_SANDBOX] == "true"


def test_configmap_carries_the_spec_compressed_and_immutably():
    spec = runner_spec({"language": "python", "code": "print(input())", "stdin": "hi",
                        "files": [{"name": "data/in.txt", "content": "x"}]})
    configmap = build_configmap_for(NAME, language=PYTHON, spec=spec)
    assert configmap["immutable"] is True
    assert set(configmap["binaryData"]) == {"spec.json.gz"} and "data" not in configmap
    document = json.loads(gzip.decompress(base64.b64decode(configmap["binaryData"]["spec.json.gz"])))
    assert document["workdir"] == WORK_DIR
    assert document["stdin"] == "hi"
    assert [f["path"] for f in document["files"]] == ["main.py", "data/in.txt"]


def test_the_runner_has_one_configmap_per_version_named_by_its_content():
    runner = build_runner_configmap(runner_source())
    assert runner["immutable"] is True and "ownerReferences" not in runner["metadata"]
    assert "@@sandbox-result@@" in runner["data"]["runner.py"]  # the isolation gate is the runner's own
    assert runner["metadata"]["name"] == RUNNER_CONFIGMAP
    assert runner_configmap_name(runner_source() + "\n") != RUNNER_CONFIGMAP


def test_job_never_retries_and_has_a_deadline():
    spec = job(OperatorConfig(setup_deadline_seconds=60), timeout=7)["spec"]
    assert spec["backoffLimit"] == 0
    assert spec["activeDeadlineSeconds"] == 60 + 7 + 30
    assert spec["ttlSecondsAfterFinished"] > 0
    assert spec["template"]["spec"]["restartPolicy"] == "Never"


def test_pod_runs_the_runner_from_the_configmap_as_uid_65532():
    pod = job()["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == PYTHON.image
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["command"] == ["python3", "-I", "-S", "/sandbox/runner/runner.py", "--isolation-wait", "30",
                                    "/sandbox/spec/spec.json.gz"]
    ungated = job(OperatorConfig(isolation_wait_seconds=0))["spec"]["template"]["spec"]["containers"][0]
    assert ungated["command"] == ["python3", "-I", "-S", "/sandbox/runner/runner.py", "/sandbox/spec/spec.json.gz"]
    assert pod["securityContext"]["runAsUser"] == container["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["runAsGroup"] == 65532
    runner_volume = next(v for v in pod["volumes"] if v["name"] == "runner")
    assert runner_volume["configMap"]["name"] == RUNNER_CONFIGMAP
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/sandbox/runner"]["readOnly"] is True and mounts["/sandbox/spec"]["readOnly"] is True
    assert set(mounts) == {"/sandbox/runner", "/sandbox/spec", WORK_DIR, "/tmp"}
    assert "initContainers" not in pod  # without test cases the spec holds only what the program is given


def test_with_test_cases_only_the_init_container_mounts_the_spec_and_hands_it_over():
    pod = job(tests=True)["spec"]["template"]["spec"]
    (deliver,) = pod["initContainers"]
    assert deliver["command"] == ["cp", "/sandbox/spec/spec.json.gz", "/sandbox/handoff/spec.json.gz"]
    assert deliver["securityContext"] == pod["containers"][0]["securityContext"]
    spec_volume = next(v for v in pod["volumes"] if v["name"] == "spec")
    assert spec_volume["configMap"]["name"] == "sbx-" + NAME
    assert [m["name"] for m in deliver["volumeMounts"]] == ["spec", "handoff"]
    assert "spec" not in [m["name"] for m in pod["containers"][0]["volumeMounts"]]
    assert pod["containers"][0]["command"][-2:] == ["--remove-spec", "/sandbox/handoff/spec.json.gz"]


def test_pod_hardening_items():
    pod = job()["spec"]["template"]["spec"]
    context = pod["containers"][0]["securityContext"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    assert not pod["hostNetwork"] and not pod["hostPID"] and not pod["hostIPC"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["privileged"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["dnsPolicy"] == "None"
    for volume in pod["volumes"]:
        assert "hostPath" not in volume
    assert "runtimeClassName" not in pod and "nodeSelector" not in pod and "tolerations" not in pod


def test_work_dir_and_tmp_are_tmpfs_counted_in_the_memory_limit_on_top_of_the_grant():
    config = OperatorConfig(runner_memory_headroom_mb=48, work_dir_size_mb=64, tmp_size_mb=16)
    pod = job(config, memory=200)["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["work"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "64Mi"}
    assert volumes["tmp"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Mi"}
    resources = pod["containers"][0]["resources"]
    assert resources["limits"]["memory"] == resources["requests"]["memory"] == f"{200 + 48 + 64 + 16}Mi"
    # Only the logs are on disk: the root filesystem is read-only and both emptyDirs are in memory.
    assert resources["limits"]["ephemeral-storage"] == "16Mi"
    assert {"cpu", "memory", "ephemeral-storage"} <= set(resources["limits"])


def test_the_isolation_gate_is_told_the_node_to_probe():
    env = {item["name"]: item for item in job()["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["SANDBOX_NODE_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.hostIP"}}
    assert env["SANDBOX_KUBELET_PORT"]["value"] == "10250"


def test_network_policy_denies_everything_for_sandbox_pods():
    policy = build_network_policy()
    assert policy["metadata"]["name"] == crd.NETWORK_POLICY_NAME
    assert policy["spec"]["podSelector"] == {"matchLabels": {crd.LABEL_SANDBOX: "true"}}
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in policy["spec"] and "egress" not in policy["spec"]


def test_resource_spec_resolves_to_a_runner_spec_or_a_reason():
    request = crd.request_from_spec(
        {"language": "PY", "code": "print(1)", "stdin": "in", "timeoutSeconds": 3,
         "files": [{"name": "a/b.bin", "content": "AAE=", "encoding": "base64"}]},
        catalogue=CATALOGUE, limits=OperatorConfig().limits,
    )
    assert request.language.name == "python"
    assert request.limits == EffectiveLimits(timeout_seconds=3, max_memory_mb=OperatorConfig().limits.default_memory_mb)
    assert request.files == (InputFile("a/b.bin", "AAE=", "base64"),)
    spec = build_runner_spec(request, workdir=WORK_DIR)
    assert spec["files"][1] == {"path": "a/b.bin", "content": "AAE=", "encoding": "base64"}
    assert spec["max_processes"] is None  # the kubelet's pod PID limit applies in the cluster
    with pytest.raises(InvalidSpecError, match=r"Unsupported language: 'cobol' \(supported: bash, c, cpp, csharp, fortran, go, java, javascript, lua, perl, php, python, ruby, rust, typescript\)"):
        runner_spec({"language": "cobol", "code": ""})
    with pytest.raises(InvalidSpecError, match="timeout_seconds must be between 1 and 60"):
        runner_spec({"language": "python", "code": "", "timeoutSeconds": 3600})
    with pytest.raises(InvalidSpecError, match="not valid base64"):
        runner_spec({"language": "python", "code": "", "files": [{"name": "x", "content": "!!", "encoding": "base64"}]})


def test_the_api_writes_the_spec_the_operator_reads_back():
    request = crd.request_from_spec(
        {"language": "bash", "code": "cat", "stdin": "in", "timeoutSeconds": 4, "maxMemoryMb": 64,
         "files": [{"name": "d/x.txt", "content": "x", "encoding": "utf-8"}],
         "args": ["-n", "a b"], "env": [{"name": "A", "value": "1"}, {"name": "B", "value": ""}]},
        catalogue=CATALOGUE, limits=OperatorConfig().limits,
    )
    assert (request.args, request.env) == (("-n", "a b"), (("A", "1"), ("B", "")))
    spec = crd.execution_spec(request, retention_seconds=60)
    assert spec["ttlSecondsAfterFinished"] == 60
    assert crd.request_from_spec(spec, catalogue=CATALOGUE, limits=OperatorConfig().limits) == request
