"""The API's Kubernetes backend: request -> SandboxExecution, and status -> ExecutionResult (plain objects)."""

from __future__ import annotations

import asyncio
import dataclasses

from sandbox_api.backends.base import Execution
from sandbox_api.backends.kubernetes import KubernetesBackend, resource_for, result_from_resource
from sandbox_contract import crd
from sandbox_contract.catalogue import load_catalogue
from sandbox_contract.request import EffectiveLimits, ExecutionLimits, InputFile, resolve_request
from sandbox_contract.result import Result

REQUEST = resolve_request(
    catalogue=load_catalogue(), limits=ExecutionLimits(), language="python", code="print(input())", stdin="hi",
    files=[InputFile(path="d/in.bin", content="AAE=", encoding="base64")], requested_limits={"timeout_seconds": 5, "max_memory_mb": 128},
)
EXECUTION = Execution(id="exec-0123456789abcdef0123", tenant="tenant-a", request=REQUEST)


def test_resource_carries_the_request_and_a_hashed_tenant():
    resource, inputs = resource_for(EXECUTION, retention_seconds=600)
    assert inputs is None  # small inputs stay in the resource
    assert resource["apiVersion"] == "sandbox.dev/v1alpha1" and resource["kind"] == "SandboxExecution"
    assert resource["metadata"]["name"] == EXECUTION.id
    tenant_label = resource["metadata"]["labels"][crd.LABEL_TENANT]
    assert tenant_label == crd.tenant_label_value("tenant-a") and "tenant-a" not in tenant_label
    assert len(tenant_label) <= 63
    assert resource["spec"] == {
        "language": "python", "code": "print(input())", "stdin": "hi",
        "files": [{"name": "d/in.bin", "content": "AAE=", "encoding": "base64"}],
        "timeoutSeconds": 5, "maxMemoryMb": 128, "maxFileSizeMb": 64, "ttlSecondsAfterFinished": 600,
    }


def test_large_inputs_go_into_a_configmap_owned_by_the_execution():
    big = "x" * (crd.MAX_INLINE_INPUT_BYTES + 1)
    execution = Execution(id=EXECUTION.id, tenant="tenant-a", request=dataclasses.replace(REQUEST, stdin=big))
    resource, inputs = resource_for(execution, retention_seconds=1)
    assert resource["spec"]["inputsConfigMap"] == "sbx-inputs-" + EXECUTION.id
    assert not set(resource["spec"]) & set(crd.INPUT_FIELDS)
    assert inputs == {"code": "print(input())", "stdin": big,
                      "files": [{"name": "d/in.bin", "content": "AAE=", "encoding": "base64"}]}
    # The tenant is charged for the inputs too, wherever they are stored.
    assert int(resource["metadata"]["annotations"]["sandbox.dev/spec-bytes"]) > len(big)
    created = {**resource, "metadata": {**resource["metadata"], "uid": "uid-1"}}
    configmap = crd.inputs_configmap(created, crd.compress(inputs))
    assert configmap["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert len(configmap["binaryData"]["inputs.json.gz"]) < 10_000  # compressed
    assert crd.merge_inputs(created, configmap) == crd.execution_spec(execution.request, retention_seconds=1)


def test_no_stdin_leaves_the_field_out():
    execution = Execution(id=EXECUTION.id, tenant="tenant-a", request=dataclasses.replace(REQUEST, stdin=None))
    assert "stdin" not in resource_for(execution, retention_seconds=1)[0]["spec"]


def test_a_new_resource_reads_as_pending():
    result = result_from_resource(resource_for(EXECUTION, retention_seconds=1)[0])
    assert (result.status, result.execution_id, result.language) == ("pending", EXECUTION.id, "python")


def test_status_round_trips_the_runner_result_into_the_api_model():
    document = {
        "status": "error_runtime", "reason": "exited with code 3", "exit_code": 3, "signal": None,
        "oom_killed": False, "stdout": "out", "stderr": "err", "stdout_truncated": True, "stderr_truncated": False,
        "duration_ms": 40, "memory_used_mb": 7, "output_files_truncated": False,
        "output_files": {"a.txt": "text", "b.bin": {"content": "AAE=", "encoding": "base64"}},
    }
    limits = EffectiveLimits(timeout_seconds=5, max_memory_mb=128)
    status = Result.from_runner(document, limits).to_status()
    resource = {**resource_for(EXECUTION, retention_seconds=1)[0], "status": status}
    result = result_from_resource(resource)
    assert result.limits.model_dump() == {"timeout_seconds": 5, "max_memory_mb": 128, "cpu_time_seconds": None,
                                          "max_file_size_mb": 64, "compile_timeout_seconds": None, "deadline_seconds": 5}
    assert result.status == "error_runtime" and result.reason == "exited with code 3"
    assert (result.exit_code, result.stdout, result.stderr, result.stdout_truncated) == (3, "out", "err", True)
    assert (result.duration_ms, result.memory_used_mb) == (40, 7)
    assert result.model_dump()["output_files"] == {"a.txt": "text", "b.bin": {"content": "AAE=", "encoding": "base64"}}


def test_ids_that_are_not_execution_ids_never_reach_the_cluster():
    backend = KubernetesBackend(catalogue=load_catalogue(), namespace="sandbox", retention_seconds=1)
    # No API client is set up: reaching the cluster would raise, so None proves the early answer.
    assert asyncio.run(backend.get("ð%\U000a5dfc\x84°]\x01", "tenant-a")) is None
    assert asyncio.run(backend.get("exec-XYZ", "tenant-a")) is None
