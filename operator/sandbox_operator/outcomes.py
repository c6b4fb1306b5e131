"""How an execution ends: the runner's result line read from the pod log, and the classification
of every other way a Job or pod can stop (pure functions over plain status dicts).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sandbox_operator import contract
from sandbox_runner import ResultLineError, longest_prefix, read_result

# The most a status may take, both as the API server stores it and as this operator sends it: well
# under etcd's request limit (1.5 MiB by default, for the whole object), leaving room for the spec.
STATUS_BUDGET_BYTES = 1024 * 1024
# Characters Go's encoding/json writes as a six-byte \u escape although they are one or three
# bytes of UTF-8, so the extra bytes each costs in storage.
_GO_ESCAPE_EXTRA = {"<": 5, ">": 5, "&": 5, "\u2028": 3, "\u2029": 3}

# Container waiting reasons that never resolve by themselves: fail at once, not at the deadline.
FATAL_WAITING_REASONS = frozenset({"ErrImageNeverPull", "InvalidImageName", "CreateContainerConfigError"})


class ResultError(ValueError):
    """The pod log holds no readable result line."""


@dataclass(frozen=True)
class Observation:
    """What the cluster says about one execution right now.

    `phase` is pending, running, or a terminal phase. When `pod_finished`, the pod's log must be read
    for the runner's result; `phase`/`reason`/`oom_killed` then say what to record if it has none.
    """

    phase: str
    reason: str | None = None
    pod_name: str | None = None
    started_at: str | None = None
    pod_finished: bool = False
    oom_killed: bool = False


def parse_result_line(log: str) -> dict:
    """The runner's result document: the last line of the log that starts with the marker."""
    try:
        document = read_result(log)
    except ResultLineError as error:
        raise ResultError(str(error)) from None
    if document.get("status") not in contract.TERMINAL_PHASES:
        raise ResultError("the runner's result line has no valid status")
    return document


def status_from_result(document: dict) -> dict:
    """The SandboxExecution status fields (camelCase) for a runner result document."""
    files = document.get("output_files") or {}
    output_files = []
    for name, value in sorted(files.items()):
        if isinstance(value, dict):
            output_files.append({"name": name, "content": value.get("content", ""), "encoding": value.get("encoding", "base64")})
        else:
            output_files.append({"name": name, "content": str(value), "encoding": "utf-8"})
    return {
        "phase": document["status"],
        "reason": document.get("reason") or "",
        "exitCode": document.get("exit_code"),
        "signal": document.get("signal"),
        "oomKilled": bool(document.get("oom_killed")),
        "stdout": document.get("stdout") or "",
        "stderr": document.get("stderr") or "",
        "stdoutTruncated": bool(document.get("stdout_truncated")),
        "stderrTruncated": bool(document.get("stderr_truncated")),
        "durationMs": document.get("duration_ms"),
        "memoryUsedMb": document.get("memory_used_mb"),
        "outputFiles": output_files,
        "outputFilesTruncated": bool(document.get("output_files_truncated")),
    }


def failure_status(phase: str, reason: str, *, oom_killed: bool = False) -> dict:
    """Status fields for an execution that ended without a result from the runner."""
    return {
        "phase": phase,
        "reason": reason,
        "exitCode": None,
        "signal": None,
        "oomKilled": oom_killed,
        "stdout": "",
        "stderr": "",
        "stdoutTruncated": False,
        "stderrTruncated": False,
        "durationMs": None,
        "memoryUsedMb": None,
        "outputFiles": [],
        "outputFilesTruncated": False,
    }


def stored_size(value: object) -> int:
    """Bytes of `value` as JSON the way the API server stores it (Go's encoding/json).

    Non-ASCII is written as UTF-8; `<`, `>`, `&`, U+2028 and U+2029 as \\u escapes; control
    characters as \\n-style or \\u00XX escapes; invalid UTF-8 (a lone surrogate here) as U+FFFD.
    Python's compact UTF-8 JSON agrees on everything but the five characters of _GO_ESCAPE_EXTRA.
    """
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return len(text.encode("utf-8", "surrogatepass")) + sum(text.count(char) * extra for char, extra in _GO_ESCAPE_EXTRA.items())


def sent_size(value: object) -> int:
    """Bytes of `value` in the request body the Kubernetes client sends (json.dumps: ASCII-only escapes)."""
    return len(json.dumps(value))


def fit_status(status: dict, budget: int = STATUS_BUDGET_BYTES) -> dict:
    """`status` within `budget` as stored and as sent: output files dropped largest first, then the
    larger of stdout and stderr shortened, then the other, each flagged as truncated.
    """
    def fits(candidate: dict) -> bool:
        return stored_size(candidate) <= budget and sent_size(candidate) <= budget

    status = dict(status)
    for item in sorted(status["outputFiles"], key=stored_size, reverse=True):
        if fits(status):
            return status
        status["outputFiles"] = [kept for kept in status["outputFiles"] if kept is not item]
        status["outputFilesTruncated"] = True
    for field in sorted(("stdout", "stderr"), key=lambda name: stored_size(status[name]), reverse=True):
        if fits(status):
            return status
        # Both measures add up field by field, so each leaves the field what the rest does not take.
        rest = {**status, field: ""}
        stored_room = budget - stored_size(rest) + stored_size("")
        sent_room = budget - sent_size(rest) + sent_size("")
        status[field] = longest_prefix(
            status[field], lambda text: stored_size(text) <= stored_room and sent_size(text) <= sent_room
        )
        status[f"{field}Truncated"] = True
    return status


def _condition(obj: dict | None, kind: str) -> dict | None:
    for condition in ((obj or {}).get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind and condition.get("status") == "True":
            return condition
    return None


def _container_state(pod: dict) -> dict:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        return status.get("state") or {}
    return {}


def _pending_detail(pod: dict | None) -> str:
    """Why a pod is not running yet, in words, from its container state or scheduling condition."""
    if pod is None:
        return "no pod was created"
    waiting = _container_state(pod).get("waiting")
    if waiting and waiting.get("reason"):
        message = waiting.get("message")
        return f"{waiting['reason']}: {message}" if message else waiting["reason"]
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return f"{condition.get('reason', 'Unschedulable')}: {condition.get('message', '')}".rstrip(": ")
    return f"pod phase {(pod.get('status') or {}).get('phase', 'Unknown')}"


def observe(
    *,
    job: dict | None,
    pod: dict | None,
    age_seconds: float,
    setup_deadline_seconds: int,
    memory_limit_mb: int,
) -> Observation:
    """Classify the Job and its pod; every way of ending maps to a terminal phase with a reason."""
    pod_name = (pod or {}).get("metadata", {}).get("name")
    state = _container_state(pod) if pod else {}
    terminated = state.get("terminated")
    pod_phase = ((pod or {}).get("status") or {}).get("phase")
    if terminated or pod_phase in ("Succeeded", "Failed"):
        terminated = terminated or {}
        if terminated.get("reason") == "OOMKilled":
            return Observation(
                "error_runtime",
                f"out of memory: the sandbox exceeded its {memory_limit_mb} MB limit",
                pod_name=pod_name, pod_finished=True, oom_killed=True,
            )
        if (pod.get("status") or {}).get("reason") == "DeadlineExceeded" or _deadline_exceeded(job):
            return Observation("timeout", "the sandbox's deadline was exceeded", pod_name=pod_name, pod_finished=True)
        exit_code = terminated.get("exitCode")
        detail = f"exit code {exit_code}" if exit_code is not None else "no exit code"
        return Observation(
            "error_setup", f"the sandbox runner ended without a result ({detail})",
            pod_name=pod_name, pod_finished=True,
        )
    if _deadline_exceeded(job):
        return Observation("timeout", "the sandbox's deadline was exceeded before it finished", pod_name=pod_name)
    if job is None or _condition(job, "Failed"):
        what = "Job was deleted" if job is None else "pod was deleted or failed"
        return Observation("error_setup", f"the sandbox {what} before it produced a result", pod_name=pod_name)
    waiting = state.get("waiting") or {}
    if waiting.get("reason") in FATAL_WAITING_REASONS:
        return Observation("error_setup", f"the sandbox cannot start: {_pending_detail(pod)}", pod_name=pod_name)
    if state.get("running"):
        return Observation(contract.PHASE_RUNNING, pod_name=pod_name, started_at=state["running"].get("startedAt"))
    if age_seconds > setup_deadline_seconds:
        return Observation(
            "error_setup",
            f"the sandbox did not start within {setup_deadline_seconds} s: {_pending_detail(pod)}",
            pod_name=pod_name,
        )
    return Observation(contract.PHASE_PENDING, pod_name=pod_name)


def _deadline_exceeded(job: dict | None) -> bool:
    condition = _condition(job, "Failed")
    return bool(condition and condition.get("reason") == "DeadlineExceeded")
