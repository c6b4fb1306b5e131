"""Result parsing from a pod log and the classification of every way a Job or pod can end."""

from __future__ import annotations

import json

import pytest

from sandbox_contract.request import EffectiveLimits
from sandbox_operator.outcomes import ResultError, observe, parse_result_line

LIMITS = EffectiveLimits(timeout_seconds=5, max_memory_mb=64)

RESULT = {
    "status": "completed", "reason": None, "exit_code": 0, "signal": None, "oom_killed": False,
    "stdout": "hi\n", "stderr": "", "stdout_truncated": False, "stderr_truncated": False,
    "duration_ms": 12, "memory_used_mb": 9,
    "output_files": {"out.txt": "text", "bin.dat": {"content": "AAE=", "encoding": "base64"}},
    "output_files_truncated": False,
}


def log_with(document: dict, before: str = "runner: starting\n") -> str:
    return before + "@@sandbox-result@@ " + json.dumps(document) + "\n"


def test_parse_takes_the_last_marker_line():
    log = log_with({"status": "timeout"}) + "noise\n" + log_with(RESULT, before="")
    assert parse_result_line(log, LIMITS, {}).status == "completed"


@pytest.mark.parametrize(
    "log, message",
    [
        ("", "no result line"),
        ("Traceback (most recent call last):\n", "no result line"),
        ("@@sandbox-result@@ {not json\n", "not valid JSON"),
        ("@@sandbox-result@@ {\"status\": \"weird\"}\n", "no valid status"),
        ("@@sandbox-result@@ [1]\n", "not a JSON object"),
    ],
)
def test_unreadable_results_are_errors_with_a_reason(log, message):
    with pytest.raises(ResultError, match=message):
        parse_result_line(log, LIMITS, {})


def test_status_from_result_maps_every_field():
    status = parse_result_line(log_with(RESULT), LIMITS, {}).to_status()
    assert status["phase"] == "completed"
    assert status["exitCode"] == 0 and status["durationMs"] == 12 and status["memoryUsedMb"] == 9
    assert status["stdout"] == "hi\n"
    assert status["outputFiles"] == [
        {"name": "bin.dat", "content": "AAE=", "encoding": "base64"},
        {"name": "out.txt", "content": "text", "encoding": "utf-8"},
    ]
    assert status["limits"] == {"timeoutSeconds": 5, "maxMemoryMb": 64, "maxFileSizeMb": 64, "deadlineSeconds": 5}


def pod(*, phase="Pending", state=None, reason=None, conditions=()):
    status = {"phase": phase, "conditions": list(conditions)}
    if state is not None:
        status["containerStatuses"] = [{"name": "sandbox", "state": state}]
    if reason:
        status["reason"] = reason
    return {"metadata": {"name": "sbx-exec-1-abcde"}, "status": status}


JOB = {"metadata": {"name": "sbx-exec-1"}, "status": {}}
FAILED_JOB = {"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}}
DEADLINE_JOB = {"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]}}


def look(job=JOB, pod_=None, age=1.0):
    return observe(job=job, pod=pod_, age_seconds=age, setup_deadline_seconds=60, memory_limit_mb=192)


def test_pending_until_the_setup_deadline_then_error_setup_with_the_reason():
    waiting = pod(state={"waiting": {"reason": "ImagePullBackOff", "message": "pull access denied"}})
    assert look(pod_=waiting, age=10).phase == "pending"
    late = look(pod_=waiting, age=61)
    assert late.phase == "error_setup"
    assert "did not start within 60 s" in late.reason and "ImagePullBackOff: pull access denied" in late.reason


def test_an_init_container_that_cannot_start_is_the_reason_not_the_waiting_sandbox():
    waiting = pod(state={"waiting": {"reason": "PodInitializing"}})
    waiting["status"]["initContainerStatuses"] = [
        {"name": "deliver-spec", "state": {"waiting": {"reason": "ErrImagePull", "message": "not found"}}}]
    assert "ErrImagePull: not found" in look(pod_=waiting, age=61).reason
    waiting["status"]["initContainerStatuses"][0]["state"]["waiting"]["reason"] = "InvalidImageName"
    assert look(pod_=waiting, age=1).phase == "error_setup"  # fatal at once


def test_unschedulable_pod_reason_names_the_scheduler_message():
    unschedulable = pod(conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                     "message": "0/1 nodes are available: Insufficient memory."}])
    seen = look(pod_=unschedulable, age=61)
    assert seen.phase == "error_setup" and "Insufficient memory" in seen.reason


def test_no_pod_yet_is_pending_and_never_forever():
    assert look(pod_=None, age=5).phase == "pending"
    assert "no pod was created" in look(pod_=None, age=61).reason


def test_image_that_can_never_be_pulled_fails_at_once():
    seen = look(pod_=pod(state={"waiting": {"reason": "ErrImageNeverPull", "message": "image not present"}}))
    assert seen.phase == "error_setup" and "ErrImageNeverPull" in seen.reason


def test_running_pod_reports_its_start():
    seen = look(pod_=pod(phase="Running", state={"running": {"startedAt": "2026-01-01T00:00:00Z"}}))
    assert (seen.phase, seen.started_at, seen.pod_name) == ("running", "2026-01-01T00:00:00Z", "sbx-exec-1-abcde")


def test_finished_pod_means_read_the_log_with_a_fallback():
    seen = look(pod_=pod(phase="Succeeded", state={"terminated": {"exitCode": 0, "reason": "Completed"}}))
    assert seen.pod_finished and seen.phase == "error_setup" and "without a result" in seen.reason


def test_whole_container_oom_killed_is_error_runtime():
    seen = look(pod_=pod(phase="Failed", state={"terminated": {"exitCode": 137, "reason": "OOMKilled"}}))
    assert seen.pod_finished and seen.oom_killed
    assert seen.phase == "error_runtime" and "out of memory" in seen.reason and "192 MB" in seen.reason


def test_runner_crash_is_error_setup_with_exit_code():
    seen = look(pod_=pod(phase="Failed", state={"terminated": {"exitCode": 1, "reason": "Error"}}))
    assert seen.phase == "error_setup" and "exit code 1" in seen.reason


def test_deadline_exceeded_is_timeout():
    killed = pod(phase="Failed", reason="DeadlineExceeded", state={"terminated": {"exitCode": 137, "reason": "Error"}})
    assert look(job=DEADLINE_JOB, pod_=killed).phase == "timeout"
    assert look(job=DEADLINE_JOB, pod_=None).phase == "timeout"


def test_deleted_job_or_pod_is_terminal():
    assert "Job was deleted" in look(job=None, pod_=None).reason
    assert "pod was deleted" in look(job=FAILED_JOB, pod_=None).reason
