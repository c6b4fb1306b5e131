"""The kopf handlers: a SandboxExecution becomes a ConfigMap and a Job; the pod's result becomes status.

Idempotent at every step, so the operator can be killed and restarted at any moment:
- children have deterministic names, so a re-run gets 409 instead of creating a second Job;
- the result is written once (see reconciler.py), even when a pod event and the timer race;
- the timer re-examines every unfinished execution, so an event missed while down is not lost.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import kopf
import prometheus_client
from kubernetes.aio import client

from sandbox_contract import crd
from sandbox_contract.catalogue import load_catalogue
from sandbox_contract.request import InvalidSpecError
from sandbox_contract.result import TERMINAL_PHASES, Phase, Result, limits_to_status
from sandbox_contract.runner_spec import build_runner_spec
from sandbox_operator import builders, metrics
from sandbox_operator.config import OperatorConfig
from sandbox_kube import connect, tolerating
from sandbox_operator.reconciler import (
    LIST_PAGE_SIZE,
    RESOURCE,
    InputsMissing,
    api_message,
    conditions,
    finish,
    full_spec,
    now,
    parse_time,
    patch_status,
    reconcile,
)

RECHECK_INTERVAL_SECONDS = 5
# The API creates an execution's inputs ConfigMap right after the execution: look again this soon.
INPUTS_RETRY_SECONDS = 0.2


class SpecFreeDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's record that an object was handled, without a copy of the spec.

    The spec is immutable (nothing to diff) and can hold up to a few hundred KiB of code and files,
    more than all of an object's annotations may take (256 KiB).
    """

    def build(self, *, body: kopf.Body, extra_fields=None) -> kopf.BodyEssence:
        essence = super().build(body=body, extra_fields=extra_fields)
        essence.pop("spec", None)
        return essence


def _is_active(status: dict, **_: Any) -> bool:
    return status.get("phase") in (Phase.PENDING, Phase.RUNNING)


def _is_finished(status: dict, **_: Any) -> bool:
    return status.get("phase") in TERMINAL_PHASES


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
    """Settings, the shared API client, the catalogue and the metrics endpoint."""
    config = OperatorConfig.from_env()
    # Watches can go silently idle; reconnect regularly instead of trusting them forever.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    # kopf's initial LIST of executions and pods comes in pages of this many objects.
    settings.watching.chunk_size = LIST_PAGE_SIZE
    settings.persistence.finalizer = f"{crd.GROUP}/operator"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=crd.GROUP)
    settings.persistence.diffbase_storage = SpecFreeDiffBaseStorage(prefix=crd.GROUP, key="last-handled")
    # Peering pauses every replica but the one with the highest priority; equal ones would all pause.
    settings.peering.priority = config.priority if config.priority is not None else random.randint(1, 2**30)
    # Handler successes every few seconds would flood the Events; the outcome is posted explicitly.
    settings.posting.level = logging.WARNING
    memo.config = config
    memo.catalogue = load_catalogue(config.languages_file or None)
    memo.runner_configmap = builders.build_runner_configmap(builders.runner_source())
    memo.api = await connect()
    memo.locks = {}
    memo.active = set()  # the unfinished executions this replica follows
    metrics.IN_FLIGHT.set_function(lambda: len(memo.active))
    if config.peering_name and not config.namespaces:
        await _ensure_cluster_peering(memo.api, config.peering_name)
    if config.metrics_port:
        prometheus_client.start_http_server(config.metrics_port)
    logger.info(
        "sandbox operator configured: namespaces=%s languages=%s peering=%s",
        ",".join(config.namespaces) or "all", ",".join(memo.catalogue.names()), config.peering_name or "standalone",
    )


async def _ensure_cluster_peering(api: client.ApiClient, name: str) -> None:
    """kopf never creates its peering object, and without it a mandatory peering never un-pauses."""
    body = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": name}}
    with tolerating(409):
        await client.CustomObjectsApi(api).create_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", body)


@kopf.on.cleanup()
async def close_client(memo: kopf.Memo, **_: Any) -> None:
    await memo.api.close()


async def _create_ignoring_conflict(create, namespace: str, body: dict) -> None:
    """Create an object; one that already exists (a restarted operator's retry) is left as is."""
    with tolerating(409):
        await create(namespace=namespace, body=body)


@kopf.on.create(*RESOURCE)
async def start_execution(
    body: kopf.Body, spec: kopf.Spec, status: kopf.Status, name: str, namespace: str,
    memo: kopf.Memo, logger: logging.Logger, **_: Any,
) -> None:
    """Create the namespace's NetworkPolicy, then the execution's ConfigMap and Job; mark it pending."""
    if status.get("phase"):
        return  # started before a restart; the timer takes it from here
    try:
        whole_spec = await full_spec(memo, namespace, body)
        request = crd.request_from_spec(whole_spec, catalogue=memo.catalogue, limits=memo.config.limits)
        runner_spec = build_runner_spec(request, workdir=builders.WORK_DIR, scratch_paths=builders.SCRATCH_PATHS)
    except InputsMissing as error:
        age = (now() - (parse_time(body["metadata"].get("creationTimestamp")) or now())).total_seconds()
        if age < memo.config.setup_deadline_seconds:
            raise kopf.TemporaryError(f"{error}; waiting for it", delay=INPUTS_RETRY_SECONDS) from None
        reason = f"{error} after {memo.config.setup_deadline_seconds} s"
        await finish(memo, namespace, name, None, Result.failure(Phase.ERROR_SETUP, reason), "unknown")
        return
    except (InvalidSpecError, crd.InputsError) as error:
        await finish(memo, namespace, name, None, Result.failure(Phase.ERROR_SETUP, str(error)), "unknown")
        return
    language = request.language
    core, batch = client.CoreV1Api(memo.api), client.BatchV1Api(memo.api)
    try:
        # The policy comes first so that no sandbox pod ever runs in the namespace without it.
        await _create_ignoring_conflict(
            client.NetworkingV1Api(memo.api).create_namespaced_network_policy, namespace,
            builders.build_network_policy(),
        )
        # Shared by the namespace's pods and named by its content: made once, then 409 each time.
        await _create_ignoring_conflict(core.create_namespaced_config_map, namespace, memo.runner_configmap)
        configmap = builders.build_configmap_for(name, language=language, spec=runner_spec)
        job = builders.build_job_for(name, language=language, limits=request.limits, config=memo.config,
                                     runner_configmap=memo.runner_configmap["metadata"]["name"],
                                     hand_off_spec=bool(request.tests))
        kopf.adopt([configmap, job], owner=body)
        await _create_ignoring_conflict(core.create_namespaced_config_map, namespace, configmap)
        await _create_ignoring_conflict(batch.create_namespaced_job, namespace, job)
    except client.ApiException as error:
        if error.status in (400, 413, 422):
            # The input cannot become a ConfigMap (too large, refused): a final answer, not a retry.
            reason = f"the sandbox could not be created: {error.reason}: {api_message(error)}"
            await finish(memo, namespace, name, None, Result.failure(Phase.ERROR_SETUP, reason, limits=request.limits),
                         language.name)
            return
        raise kopf.TemporaryError(f"creating the sandbox failed ({error.status} {error.reason}); retrying", delay=2)
    pending = {"phase": Phase.PENDING, "limits": limits_to_status(request.limits),
               "conditions": conditions(Phase.PENDING, None)}
    await patch_status(memo, namespace, name, pending)
    memo.active.add((namespace, name))
    message = (f"language={language.name} timeout={request.limits.timeout_seconds}s "
               f"memory={request.limits.max_memory_mb}MB job={job['metadata']['name']}")
    logger.info("started: %s", message)
    kopf.event(body, type="Normal", reason="Started", message=message)


@kopf.on.event("", "v1", "pods", labels={crd.LABEL_MANAGED_BY: crd.MANAGED_BY})
async def follow_sandbox_pod(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Every change of a sandbox pod re-examines its execution at once (the fast path)."""
    metadata = body.get("metadata", {})
    execution = metadata.get("labels", {}).get(crd.LABEL_EXECUTION)
    # A pod being deleted is mostly our own clean-up; anything else the timer notices.
    if execution and not metadata.get("deletionTimestamp"):
        await reconcile(memo, body["metadata"]["namespace"], execution)


@kopf.timer(*RESOURCE, interval=RECHECK_INTERVAL_SECONDS, when=_is_active)
async def recheck_execution(name: str, namespace: str, memo: kopf.Memo, **_: Any) -> None:
    """The safety net: enforces the setup deadline and catches what events missed."""
    memo.active.add((namespace, name))
    await reconcile(memo, namespace, name)


@kopf.daemon(*RESOURCE, when=_is_finished, cancellation_timeout=5)
async def expire_finished(
    spec: kopf.Spec, status: kopf.Status, name: str, namespace: str, memo: kopf.Memo, logger: logging.Logger,
    stopped: kopf.DaemonStopped, **_: Any,
) -> None:
    """Delete a finished execution once it is older than its ttlSecondsAfterFinished.

    A daemon sleeping until that moment, not a timer: nothing to do (or to log) in between.
    """
    finished = parse_time(status.get("completionTime")) or now()
    ttl = spec.get("ttlSecondsAfterFinished", 3600)
    remaining = ttl - (now() - finished).total_seconds()
    if remaining > 0:
        await stopped.wait(remaining)
        if stopped:
            return  # the operator is stopping or the execution is being deleted anyway
    with tolerating(404):
        await client.CustomObjectsApi(memo.api).delete_namespaced_custom_object(
            *RESOURCE[:2], namespace, crd.PLURAL, name, propagation_policy="Background"
        )
        logger.info("deleted after its retention of %s s", ttl)
