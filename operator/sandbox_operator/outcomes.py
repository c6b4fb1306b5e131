"""How an execution ends: the runner's result line read from the pod log, and the classification
of every other way a Job or pod can stop (pure functions over plain status dicts).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from sandbox_contract import crd
from sandbox_contract.request import EffectiveLimits
from sandbox_contract.crd import STATUS_BUDGET_BYTES, sent_size, stored_size
from sandbox_contract.result import TERMINAL_PHASES, Phase, Result
from sandbox_runner import ResultLineError, longest_prefix, read_result

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

    phase: Phase
    reason: str | None = None
    pod_name: str | None = None
    started_at: str | None = None
    pod_finished: bool = False
    oom_killed: bool = False


def parse_result_line(log: str, limits: EffectiveLimits | None, spec: dict) -> Result:
    """The runner's result: the last line of the log that starts with the marker, judged against the
    test cases of the execution's `spec` when it has some."""
    try:
        document = read_result(log)
    except ResultLineError as error:
        raise ResultError(str(error)) from None
    if document.get("status") not in TERMINAL_PHASES:
        raise ResultError("the runner's result line has no valid status")
    tests, comparison = crd.tests_from_spec(spec)
    try:
        return Result.from_runner(document, limits, tests, comparison)
    except ValueError as error:
        raise ResultError(str(error)) from None


def fit_status(status: dict, budget: int = STATUS_BUDGET_BYTES) -> dict:
    """`status` within `budget` as stored and as sent: output files dropped largest first, then the
    longest of the streams (stdout and stderr of the program, the compiler and each test case)
    shortened, then the next, each flagged as truncated.
    """
    def fits(candidate: dict) -> bool:
        return stored_size(candidate) <= budget and sent_size(candidate) <= budget

    status = copy.deepcopy(status)
    for item in sorted(status["outputFiles"], key=stored_size, reverse=True):
        if fits(status):
            return status
        status["outputFiles"] = [kept for kept in status["outputFiles"] if kept is not item]
        status["outputFilesTruncated"] = True
    parts = (status, status.get("compile"), *(status.get("tests") or ()))
    streams = [(part, field) for part in parts if part for field in ("stdout", "stderr")]
    for part, field in sorted(streams, key=lambda stream: stored_size(stream[0][stream[1]]), reverse=True):
        if fits(status):
            return status
        # Both measures add up field by field, so each leaves the field what the rest does not take.
        text, part[field] = part[field], ""
        stored_room = budget - stored_size(status) + stored_size("")
        sent_room = budget - sent_size(status) + sent_size("")
        part[field] = longest_prefix(text, lambda prefix: stored_size(prefix) <= stored_room and sent_size(prefix) <= sent_room)
        part[f"{field}Truncated"] = True
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


def _waiting(pod: dict | None) -> dict:
    """Why the pod's init container (which hands the spec over) or its container waits: the first
    that waits for something of its own (PodInitializing only means the other is not done)."""
    status = (pod or {}).get("status") or {}
    for container in (*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])):
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") and waiting["reason"] != "PodInitializing":
            return waiting
    return {}


def _pending_detail(pod: dict | None) -> str:
    """Why a pod is not running yet, in words, from its containers' states or scheduling condition."""
    if pod is None:
        return "no pod was created"
    waiting = _waiting(pod)
    if waiting:
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
    memory_limit_mb: int | None,
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
                Phase.ERROR_RUNTIME,
                f"out of memory: the sandbox exceeded its {memory_limit_mb} MB limit"
                if memory_limit_mb else "out of memory: the sandbox exceeded its memory limit",
                pod_name=pod_name, pod_finished=True, oom_killed=True,
            )
        if (pod.get("status") or {}).get("reason") == "DeadlineExceeded" or _deadline_exceeded(job):
            return Observation(Phase.TIMEOUT, "the sandbox's deadline was exceeded", pod_name=pod_name, pod_finished=True)
        exit_code = terminated.get("exitCode")
        detail = f"exit code {exit_code}" if exit_code is not None else "no exit code"
        return Observation(
            Phase.ERROR_SETUP, f"the sandbox runner ended without a result ({detail})",
            pod_name=pod_name, pod_finished=True,
        )
    if _deadline_exceeded(job):
        return Observation(Phase.TIMEOUT, "the sandbox's deadline was exceeded before it finished", pod_name=pod_name)
    if job is None or _condition(job, "Failed"):
        what = "Job was deleted" if job is None else "pod was deleted or failed"
        return Observation(Phase.ERROR_SETUP, f"the sandbox {what} before it produced a result", pod_name=pod_name)
    if _waiting(pod).get("reason") in FATAL_WAITING_REASONS:
        return Observation(Phase.ERROR_SETUP, f"the sandbox cannot start: {_pending_detail(pod)}", pod_name=pod_name)
    if state.get("running"):
        return Observation(Phase.RUNNING, pod_name=pod_name, started_at=state["running"].get("startedAt"))
    if age_seconds > setup_deadline_seconds:
        return Observation(
            Phase.ERROR_SETUP,
            f"the sandbox did not start within {setup_deadline_seconds} s: {_pending_detail(pod)}",
            pod_name=pod_name,
        )
    return Observation(Phase.PENDING, pod_name=pod_name)


def _deadline_exceeded(job: dict | None) -> bool:
    condition = _condition(job, "Failed")
    return bool(condition and condition.get("reason") == "DeadlineExceeded")
