"""Bringing one SandboxExecution's status up to date with its Job and pod, and finishing it once.

Called by the handlers for pod events (the fast path) and by the timer (the safety net). Safe to call
any number of times, from a restarted operator too: the terminal status is written with the
resource's resourceVersion as a precondition, so the result is written exactly once.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging

import kopf
from kubernetes.aio import client

from sandbox_contract import crd
from sandbox_contract.result import TERMINAL_PHASES, Phase, Result, limits_from_status
from sandbox_kube import tolerating
from sandbox_operator import builders, metrics, outcomes

RESOURCE = (crd.GROUP, crd.VERSION, crd.PLURAL)
# The API server is overloaded or unavailable: the write is tried again later, the status is not at fault.
TRANSIENT_STATUSES = frozenset({429, 502, 503, 504})
LIST_PAGE_SIZE = 50
# Enough of the pod log for the result line: the runner's caps keep it below 1 MiB.
LOG_LIMIT_BYTES = 4 * 1024 * 1024


class InputsMissing(Exception):
    """The execution names an inputs ConfigMap that does not exist (yet: the API creates it second)."""


async def full_spec(memo: kopf.Memo, namespace: str, execution: dict) -> dict:
    """The execution's spec with the inputs of its inputs ConfigMap, if it has one.

    Raises InputsMissing when that ConfigMap does not exist, crd.InputsError when it cannot be used.
    """
    spec = dict(execution.get("spec") or {})
    name = spec.get("inputsConfigMap")
    if not name:
        return spec
    try:
        configmap = await client.CoreV1Api(memo.api).read_namespaced_config_map(name, namespace)
    except client.ApiException as error:
        if error.status == 404:
            raise InputsMissing(f"its inputs ConfigMap {name!r} does not exist") from None
        raise
    return crd.merge_inputs(execution, memo.api.sanitize_for_serialization(configmap))


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def timestamp(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> datetime.datetime | None:
    if not value:
        return None
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


async def reconcile(memo: kopf.Memo, namespace: str, name: str) -> None:
    """Bring one execution's status up to date with its Job and pod; finish it when they ended."""
    # One look at a time per execution in this process, so a burst of pod events reads the log once.
    async with memo.locks.setdefault((namespace, name), asyncio.Lock()):
        await _reconcile(memo, namespace, name)


async def _reconcile(memo: kopf.Memo, namespace: str, name: str) -> None:
    objects = client.CustomObjectsApi(memo.api)
    try:
        execution = await objects.get_namespaced_custom_object(*RESOURCE[:2], namespace, crd.PLURAL, name)
    except client.ApiException as error:
        if error.status == 404:
            forget(memo, namespace, name)
            return
        raise
    status = execution.get("status") or {}
    phase = status.get("phase")
    if not phase:
        return  # the create handler has not finished; it will mark the execution pending
    if phase in TERMINAL_PHASES:
        forget(memo, namespace, name)
        await delete_children(memo, namespace, name)
        return
    job, pod = await _read_job_and_pod(memo, namespace, name)
    spec = execution.get("spec") or {}
    created = parse_time(execution["metadata"].get("creationTimestamp")) or now()
    # Written with the pending phase: the limits the execution was started with.
    limits = limits_from_status(status.get("limits"))
    seen = outcomes.observe(
        job=job, pod=pod, age_seconds=(now() - created).total_seconds(),
        setup_deadline_seconds=memo.config.setup_deadline_seconds,
        memory_limit_mb=builders.memory_limit_mb(limits.max_memory_mb, memo.config) if limits else None,
    )
    found = memo.catalogue.find(spec.get("language", ""))
    language = found.name if found else "unknown"
    if seen.pod_finished:
        result = await _result_from_pod_log(memo, namespace, seen, limits, execution)
        await finish(memo, namespace, name, execution, result, language, pod_name=seen.pod_name)
    elif seen.phase in TERMINAL_PHASES:
        result = Result.failure(seen.phase, seen.reason or seen.phase, oom_killed=seen.oom_killed, limits=limits)
        await finish(memo, namespace, name, execution, result, language, pod_name=seen.pod_name)
    elif seen.phase == Phase.RUNNING and phase != Phase.RUNNING:
        started = seen.started_at or timestamp(now())
        running = {"phase": Phase.RUNNING, "podName": seen.pod_name, "startTime": started,
                   "conditions": conditions(Phase.RUNNING, None)}
        try:
            await patch_status(memo, namespace, name, running, resource_version=execution["metadata"]["resourceVersion"])
        except client.ApiException as error:
            if error.status in (404, 409):
                return  # changed meanwhile; the next look decides again
            raise
        pending = (parse_time(started) - created).total_seconds()
        metrics.PHASE_SECONDS.labels("pending").observe(max(pending, 0))


async def _read_job_and_pod(memo: kopf.Memo, namespace: str, name: str) -> tuple[dict | None, dict | None]:
    job = None
    with tolerating(404):
        job = memo.api.sanitize_for_serialization(
            await client.BatchV1Api(memo.api).read_namespaced_job(crd.child_name(name), namespace)
        )
    selector = f"{crd.LABEL_EXECUTION}={name},{crd.LABEL_MANAGED_BY}={crd.MANAGED_BY}"
    items, token = [], None
    while token != "":  # pages, so no single answer grows with what the namespace holds
        pods = await client.CoreV1Api(memo.api).list_namespaced_pod(
            namespace, label_selector=selector, limit=LIST_PAGE_SIZE, _continue=token
        )
        items += [memo.api.sanitize_for_serialization(pod) for pod in pods.items]
        token = pods.metadata._continue or ""
    items.sort(key=lambda pod: pod["metadata"].get("creationTimestamp", ""))
    return job, (items[-1] if items else None)


async def _result_from_pod_log(
    memo: kopf.Memo, namespace: str, seen: outcomes.Observation, limits: EffectiveLimits | None, execution: dict
) -> Result:
    """The runner's result from its result line, judged against the spec's test cases; the
    observation's classification when there is none."""
    try:
        log = await client.CoreV1Api(memo.api).read_namespaced_pod_log(
            seen.pod_name, namespace, container=builders.CONTAINER_NAME, limit_bytes=LOG_LIMIT_BYTES
        )
        return outcomes.parse_result_line(log, limits, await full_spec(memo, namespace, execution))
    except client.ApiException as error:
        if error.status != 404:
            raise
        detail = "the pod's log is gone"
    except (outcomes.ResultError, InputsMissing, crd.InputsError) as error:
        detail = str(error)
    if seen.phase == Phase.ERROR_SETUP:
        return Result.failure(Phase.ERROR_SETUP, f"{seen.reason}: {detail}", limits=limits)
    return Result.failure(seen.phase, seen.reason or detail, oom_killed=seen.oom_killed, limits=limits)


def conditions(phase: Phase, reason: str | None) -> list[dict]:
    """The full condition list for a phase (merge patches replace lists whole)."""
    moment = timestamp(now())
    started = phase != Phase.PENDING
    result = [{"type": crd.CONDITION_STARTED, "status": str(started), "lastTransitionTime": moment,
               "reason": "PodStarted" if started else "Pending"}]
    if phase in TERMINAL_PHASES:
        outcome = crd.CONDITION_REASONS[phase]
        result += [
            {"type": crd.CONDITION_FINISHED, "status": "True", "reason": outcome, "message": reason or "",
             "lastTransitionTime": moment},
            {"type": crd.CONDITION_SUCCEEDED, "status": str(phase == Phase.COMPLETED), "reason": outcome,
             "message": reason or "", "lastTransitionTime": moment},
        ]
    return result


async def finish(
    memo: kopf.Memo, namespace: str, name: str, execution: dict | None, result: Result, language: str,
    *, pod_name: str | None = None,
) -> None:
    """Write the terminal status once (resourceVersion precondition), then post an Event and clean up.

    The status is cut to fit (outcomes.fit_status) before it is written. Should the API server refuse
    it all the same (a large spec next to it, a limit of its own), a small error_setup status saying
    why takes its place: an execution never stays unfinished because its result cannot be stored.
    """
    objects = client.CustomObjectsApi(memo.api)
    finished = now()
    status = terminal_status(result, finished, pod_name)
    refused = False
    for _attempt in range(5):
        try:
            if execution is None:
                execution = await objects.get_namespaced_custom_object(
                    *RESOURCE[:2], namespace, crd.PLURAL, name
                )
            if (execution.get("status") or {}).get("phase") in TERMINAL_PHASES:
                return  # another look already wrote the result
            # Written whole (a superset of the current status, so nothing needs deleting): what is
            # sized is exactly what the API server keeps.
            stored = outcomes.fit_status(merge_patched(execution.get("status") or {}, status))
            version = await record_result_bytes(memo, namespace, name, stored, execution["metadata"]["resourceVersion"])
            await patch_status(memo, namespace, name, stored, resource_version=version)
            break
        except client.ApiException as error:
            if error.status == 404:
                return
            if error.status == 409:
                execution = None  # changed meanwhile (often kopf's own annotations): read again, retry
                continue
            if error.status in TRANSIENT_STATUSES or refused:
                raise  # the API server is unavailable, or even the small fallback was refused
            refused = True
            result = Result.failure(Phase.ERROR_SETUP, _refused_reason(error, result), limits=result.limits)
            status = terminal_status(result, finished, pod_name)
            execution = None  # the annotation was written: read the new version
    else:
        raise kopf.TemporaryError("the execution kept changing while its result was written", delay=1)
    outcome = result.status
    message = f"{outcome}: {result.reason or 'exit code 0'}"
    kopf.event(execution, type="Normal" if outcome == Phase.COMPLETED else "Warning",
               reason=crd.CONDITION_REASONS[outcome], message=message[:1000])
    metrics.EXECUTIONS.labels(language, outcome).inc()
    created = parse_time(execution["metadata"].get("creationTimestamp"))
    started = parse_time((execution.get("status") or {}).get("startTime"))
    if created:
        metrics.PHASE_SECONDS.labels("total").observe(max((finished - created).total_seconds(), 0))
    if started:
        metrics.PHASE_SECONDS.labels("running").observe(max((finished - started).total_seconds(), 0))
    forget(memo, namespace, name)
    await delete_children(memo, namespace, name)
    logging.getLogger(__name__).info("finished %s/%s: %s", namespace, name, message)


def terminal_status(result: Result, finished: datetime.datetime, pod_name: str | None) -> dict:
    """The status to write for a result: its fields, the completion time and the final conditions."""
    status = {**result.to_status(), "completionTime": timestamp(finished),
              "conditions": conditions(result.status, result.reason)}
    if pod_name:
        status["podName"] = pod_name
    return status


def merge_patched(current: dict, patch: dict) -> dict:
    """`current` after a JSON merge patch of top-level fields: the patch's values win, nulls delete."""
    return {key: value for key, value in {**current, **patch}.items() if value is not None}


def _refused_reason(error: client.ApiException, result: Result) -> str:
    ended = f"{result.status} ({result.reason or 'exit code 0'})"
    return (f"the result could not be stored: the API server refused it with {error.status} {error.reason}: "
            f"{api_message(error)}; the program had ended {ended}")[:2000]


async def record_result_bytes(memo: kopf.Memo, namespace: str, name: str, status: dict, resource_version: str) -> str:
    """Annotate the execution with the size of the status about to be stored (the API sums it per
    tenant), if nobody changed the execution since `resource_version`; returns the new version.

    A write of its own (the status subresource ignores every change outside `status`), made first:
    an operator stopped between the two writes writes both again, as the status is not terminal yet.
    """
    patch = {"metadata": {"resourceVersion": resource_version,
                          "annotations": {crd.ANNOTATION_RESULT_BYTES: str(crd.stored_size(status))}}}
    updated = await client.CustomObjectsApi(memo.api).patch_namespaced_custom_object(
        *RESOURCE[:2], namespace, crd.PLURAL, name, patch
    )
    return updated["metadata"]["resourceVersion"]


def api_message(error: client.ApiException) -> str:
    """The API server's own message from an error response, which says what was refused."""
    try:
        return json.loads(error.body or "{}").get("message", "")[:500]
    except (ValueError, AttributeError):
        return ""


async def delete_children(memo: kopf.Memo, namespace: str, name: str) -> None:
    """Delete the Job (its pod with it) and the ConfigMap; already gone is fine."""
    child = crd.child_name(name)
    deletions = (
        lambda: client.BatchV1Api(memo.api).delete_namespaced_job(child, namespace, propagation_policy="Background"),
        lambda: client.CoreV1Api(memo.api).delete_namespaced_config_map(child, namespace),
    )
    for delete in deletions:
        with tolerating(404):
            await delete()


async def patch_status(
    memo: kopf.Memo, namespace: str, name: str, status: dict, *, resource_version: str | None = None
) -> None:
    """Merge `status` in; with `resource_version`, only if nobody changed the resource since (else 409)."""
    patch: dict = {"status": status}
    if resource_version:
        patch["metadata"] = {"resourceVersion": resource_version}
    await client.CustomObjectsApi(memo.api).patch_namespaced_custom_object_status(
        *RESOURCE[:2], namespace, crd.PLURAL, name, patch
    )


def forget(memo: kopf.Memo, namespace: str, name: str) -> None:
    memo.active.discard((namespace, name))
    memo.locks.pop((namespace, name), None)
