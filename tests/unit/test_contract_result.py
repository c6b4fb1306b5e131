"""The result contract: one list of fields, and the same result in every form it takes."""

from __future__ import annotations

import dataclasses

import pytest

from sandbox_api.models import ExecutionResult
from sandbox_contract.request import EffectiveLimits, TestCase
from sandbox_contract.result import FIELDS, STATUS_NAMES, TERMINAL_PHASES, OutputFile, Phase, Result, TestResult, TestSummary
from sandbox_runner import RESULT_FIELDS

LIMITS = EffectiveLimits(timeout_seconds=5, max_memory_mb=64)
DOCUMENT = {
    "status": "error_runtime", "reason": "exited with code 3", "exit_code": 3, "signal": None,
    "oom_killed": False, "stdout": "out", "stderr": "err", "stdout_truncated": True, "stderr_truncated": False,
    "duration_ms": 40, "memory_used_mb": 7,
    "output_files": {"b.bin": {"content": "AAE=", "encoding": "base64"}, "a.txt": "text"},
    "output_files_truncated": False, "cpu_time_ms": 35, "limit_exceeded": None,
    "compile": {"exit_code": 0, "signal": None, "stdout": "", "stderr": "warning: x", "stdout_truncated": False,
                "stderr_truncated": False, "duration_ms": 300},
    "tests": None,
}


def test_the_result_fields_are_the_runners():
    assert FIELDS == RESULT_FIELDS


def test_the_api_model_has_every_result_field_and_nothing_else():
    assert set(ExecutionResult.model_fields) == {"execution_id", "language", *FIELDS, "test_summary", "limits"}


def test_the_runner_reports_only_terminal_phases():
    assert TERMINAL_PHASES == {phase for phase in Phase if phase.finished}
    assert {Phase.PENDING, Phase.RUNNING}.isdisjoint(TERMINAL_PHASES)


def test_a_runner_document_reads_the_same_in_the_api_and_through_a_status():
    result = Result.from_runner(DOCUMENT, LIMITS)
    assert result.output_files == {"a.txt": OutputFile("text"), "b.bin": OutputFile("AAE=", "base64")}
    assert Result.from_status(result.to_status()) == result
    document = result.to_document()
    assert document["test_summary"] is None
    assert {name: document[name] for name in FIELDS} == {**DOCUMENT, "output_files": {
        "a.txt": "text", "b.bin": {"content": "AAE=", "encoding": "base64"}}}
    assert document["limits"] == {"timeout_seconds": 5, "max_memory_mb": 64, "cpu_time_seconds": None, "max_file_size_mb": 64, "compile_timeout_seconds": None, "deadline_seconds": 5}
    answer = ExecutionResult.of(result, execution_id="exec-00000000000000000000", language="bash")
    assert answer.model_dump(mode="json") == {"execution_id": "exec-00000000000000000000", "language": "bash", **document}


def test_the_status_uses_camel_case_and_phase():
    status = Result.from_runner(DOCUMENT, LIMITS).to_status()
    assert set(status) == {STATUS_NAMES[name] for name in (*FIELDS, "test_summary", "limits")}
    assert (status["phase"], status["exitCode"], status["stdoutTruncated"]) == ("error_runtime", 3, True)
    assert status["limits"] == {"timeoutSeconds": 5, "maxMemoryMb": 64, "maxFileSizeMb": 64, "deadlineSeconds": 5}
    assert status["compile"]["stderr"] == "warning: x" and status["compile"]["durationMs"] == 300


def test_a_status_the_operator_has_not_written_yet_is_pending_without_limits():
    assert Result.from_status({}) == Result(status=Phase.PENDING)


def test_a_failure_has_only_its_phase_reason_and_limits():
    failure = Result.failure(Phase.ERROR_SETUP, "no pod", limits=LIMITS)
    assert failure.to_document() == {**dataclasses.asdict(Result(status=Phase.ERROR_SETUP)), "status": "error_setup",
                                     "reason": "no pod", "limits": {"timeout_seconds": 5, "max_memory_mb": 64, "cpu_time_seconds": None, "max_file_size_mb": 64, "compile_timeout_seconds": None, "deadline_seconds": 5}}


def test_an_unknown_status_from_the_runner_is_refused():
    with pytest.raises(ValueError):
        Result.from_runner({**DOCUMENT, "status": "weird"}, None)


def _run(status="completed", stdout=b"3\n", **fields):
    """A test case's run as the runner reports it."""
    import hashlib

    from sandbox_runner import without_trailing_whitespace
    digests = None if stdout is None else {
        "exact": hashlib.sha256(stdout).hexdigest(),
        "trailing_whitespace": hashlib.sha256(without_trailing_whitespace(stdout)).hexdigest()}
    return {"status": status, "reason": None, "exit_code": 0, "signal": None, "oom_killed": False,
            "stdout": (stdout or b"").decode(), "stderr": "", "stdout_truncated": stdout is None,
            "stderr_truncated": False, "duration_ms": 4, "memory_used_mb": 2, "cpu_time_ms": 1,
            "limit_exceeded": None, "stdout_sha256": digests, **fields}


@pytest.mark.parametrize("run,expected,comparison,verdict", [
    (_run(stdout=b"3\n"), "3\n", "exact", "passed"),
    (_run(stdout=b"3  \n\n\n"), "3", "trailing_whitespace", "passed"),
    (_run(stdout=b"3  \n"), "3\n", "exact", "wrong_answer"),
    (_run(stdout=b" 3\n"), "3\n", "trailing_whitespace", "wrong_answer"),  # leading blanks count
    (_run(stdout=None), "3\n", "trailing_whitespace", "output_limit"),  # cut: never a wrong answer
    (_run("timeout", stdout=b"", limit_exceeded="cpu_time"), "3\n", "exact", "timeout"),
    (_run("error_runtime", stdout=b"3\n", exit_code=1), "3\n", "exact", "error_runtime"),
    (_run("error_runtime", stdout=b"", oom_killed=True, limit_exceeded="memory"), "3\n", "exact", "memory_limit"),
    (_run("skipped", stdout=None), "3\n", "exact", "skipped"),
])
def test_each_test_case_gets_its_verdict(run, expected, comparison, verdict):
    case = TestCase(input="1 2\n", expected_output=expected, name="adds")
    judged = TestResult.judge(run, case, comparison)
    assert (judged.verdict, judged.name) == (verdict, "adds")


def test_test_results_and_their_summary_read_the_same_everywhere():
    cases = (TestCase("1 2", "3"), TestCase("2 2", "4", name="second"), TestCase("0 0", "0"))
    document = {**DOCUMENT, "status": "completed", "reason": None, "stdout": "", "stderr": "", "exit_code": None,
                "tests": [_run(stdout=b"3\n"), _run(stdout=b"5\n"), _run("timeout", stdout=b"")]}
    result = Result.from_runner(document, LIMITS, cases, "trailing_whitespace")
    assert [test.verdict for test in result.tests] == ["passed", "wrong_answer", "timeout"]
    assert result.test_summary == TestSummary(passed=1, total=3, first_failure={"index": 1, "name": "second",
                                                                                  "verdict": "wrong_answer"})
    assert Result.from_status(result.to_status()) == result
    answer = ExecutionResult.of(result, execution_id="exec-00000000000000000000", language="c")
    assert answer.model_dump(mode="json")["test_summary"]["first_failure"]["verdict"] == "wrong_answer"
    assert "stdout_sha256" not in answer.model_dump()["tests"][0]  # digests stay between runner and backend
    with pytest.raises(ValueError, match="reported 3 tests, the request has 2"):
        Result.from_runner(document, LIMITS, cases[:2], "exact")
