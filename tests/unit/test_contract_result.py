"""The result contract: one list of fields, and the same result in every form it takes."""

from __future__ import annotations

import dataclasses

import pytest

from sandbox_api.models import ExecutionResult
from sandbox_contract.request import EffectiveLimits
from sandbox_contract.result import FIELDS, STATUS_NAMES, TERMINAL_PHASES, OutputFile, Phase, Result
from sandbox_runner import RESULT_FIELDS

LIMITS = EffectiveLimits(timeout_seconds=5, max_memory_mb=64)
DOCUMENT = {
    "status": "error_runtime", "reason": "exited with code 3", "exit_code": 3, "signal": None,
    "oom_killed": False, "stdout": "out", "stderr": "err", "stdout_truncated": True, "stderr_truncated": False,
    "duration_ms": 40, "memory_used_mb": 7,
    "output_files": {"b.bin": {"content": "AAE=", "encoding": "base64"}, "a.txt": "text"},
    "output_files_truncated": False,
}


def test_the_result_fields_are_the_runners():
    assert FIELDS == RESULT_FIELDS


def test_the_api_model_has_every_result_field_and_nothing_else():
    assert set(ExecutionResult.model_fields) == {"execution_id", "language", *FIELDS, "limits"}


def test_the_runner_reports_only_terminal_phases():
    assert TERMINAL_PHASES == {phase for phase in Phase if phase.finished}
    assert {Phase.PENDING, Phase.RUNNING}.isdisjoint(TERMINAL_PHASES)


def test_a_runner_document_reads_the_same_in_the_api_and_through_a_status():
    result = Result.from_runner(DOCUMENT, LIMITS)
    assert result.output_files == {"a.txt": OutputFile("text"), "b.bin": OutputFile("AAE=", "base64")}
    assert Result.from_status(result.to_status()) == result
    document = result.to_document()
    assert {name: document[name] for name in FIELDS} == {**DOCUMENT, "output_files": {
        "a.txt": "text", "b.bin": {"content": "AAE=", "encoding": "base64"}}}
    assert document["limits"] == {"timeout_seconds": 5, "max_memory_mb": 64}
    answer = ExecutionResult.of(result, execution_id="exec-00000000000000000000", language="bash")
    assert answer.model_dump(mode="json") == {"execution_id": "exec-00000000000000000000", "language": "bash", **document}


def test_the_status_uses_camel_case_and_phase():
    status = Result.from_runner(DOCUMENT, LIMITS).to_status()
    assert set(status) == {STATUS_NAMES[name] for name in (*FIELDS, "limits")}
    assert (status["phase"], status["exitCode"], status["stdoutTruncated"]) == ("error_runtime", 3, True)
    assert status["limits"] == {"timeoutSeconds": 5, "maxMemoryMb": 64}


def test_a_status_the_operator_has_not_written_yet_is_pending_without_limits():
    assert Result.from_status({}) == Result(status=Phase.PENDING)


def test_a_failure_has_only_its_phase_reason_and_limits():
    failure = Result.failure(Phase.ERROR_SETUP, "no pod", limits=LIMITS)
    assert failure.to_document() == {**dataclasses.asdict(Result(status=Phase.ERROR_SETUP)), "status": "error_setup",
                                     "reason": "no pod", "limits": {"timeout_seconds": 5, "max_memory_mb": 64}}


def test_an_unknown_status_from_the_runner_is_refused():
    with pytest.raises(ValueError):
        Result.from_runner({**DOCUMENT, "status": "weird"}, None)
