"""The Kubernetes backend: each execution is a SandboxExecution resource that the operator runs.

`submit` creates the resource in the configured namespace, with the tenant recorded as a hash in a
label (never the key). Waiting costs no thread and no watch per request: ONE background task
watches the namespace's SandboxExecutions and resolves the futures of whoever waits for them.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import defaultdict

from kubernetes.aio import client, watch

from sandbox_api.backends.base import Backend, BackendError, Execution, InputTooLarge
from sandbox_api.config import Settings
from sandbox_api.limits import Limits
from sandbox_api.models import EXECUTION_ID_PATTERN, ExecutionResult, LanguageInfo
from sandbox_api.shared_limits import ANNOTATION_SPEC_BYTES, SharedLimits, list_executions
from sandbox_contract import crd
from sandbox_contract.catalogue import Catalogue
from sandbox_contract.result import TERMINAL_PHASES, Result
from sandbox_kube import connect

log = logging.getLogger(__name__)

CREATED_BY_LABEL = "app.kubernetes.io/created-by"
CREATED_BY = "sandbox-api"
# The watch is renewed this often even when quiet: idle watches can die silently.
WATCH_SECONDS = 240
RETRY_DELAY_SECONDS = 1.0


def resource_for(execution: Execution, *, retention_seconds: int) -> tuple[dict, dict | None]:
    """The SandboxExecution for a validated request (its name is the execution id), and the inputs
    that go into a ConfigMap of their own when they are too large to sit in it (else None)."""
    spec = crd.execution_spec(execution.request, retention_seconds=retention_seconds)
    stored = crd.stored_size(spec)
    inputs = None
    if crd.stored_request_size(execution.request) > crd.MAX_INLINE_INPUT_BYTES:
        spec, inputs = crd.split_inputs(spec, execution.id)
    resource = {
        "apiVersion": crd.API_VERSION,
        "kind": crd.KIND,
        "metadata": {
            "name": execution.id,
            "labels": {
                crd.LABEL_TENANT: crd.tenant_label_value(execution.tenant),
                CREATED_BY_LABEL: CREATED_BY,
            },
            # Counted against the tenant's retained bytes (sandbox_api.shared_limits), inputs included.
            "annotations": {ANNOTATION_SPEC_BYTES: str(stored)},
        },
        "spec": spec,
    }
    return resource, inputs


def result_from_resource(resource: dict) -> ExecutionResult:
    """The API's result model from a SandboxExecution's status (pending until the operator acts)."""
    return ExecutionResult.of(
        Result.from_status(resource.get("status") or {}),
        execution_id=resource["metadata"]["name"], language=(resource.get("spec") or {}).get("language", ""),
    )


def _is_finished(resource: dict) -> bool:
    return (resource.get("status") or {}).get("phase") in TERMINAL_PHASES


class KubernetesBackend(Backend):
    name = "kubernetes"

    def __init__(self, *, catalogue: Catalogue, namespace: str, retention_seconds: int):
        self.catalogue = catalogue
        self.namespace = namespace
        self.retention_seconds = retention_seconds
        self._api: client.ApiClient | None = None
        self._objects: client.CustomObjectsApi | None = None
        self._watcher: asyncio.Task | None = None
        self._waiters: dict[str, set[asyncio.Future]] = defaultdict(set)

    async def start(self) -> None:
        self._api = await connect()
        self._objects = client.CustomObjectsApi(self._api)
        self._watcher = asyncio.create_task(self._watch_forever(), name="sandboxexecution-watch")

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        if self._api is not None:
            await self._api.close()

    async def submit(self, execution: Execution) -> None:
        """Create the SandboxExecution, then its inputs ConfigMap when it has one: owned by the
        execution, so it needs the execution's uid. The operator waits for it (within the setup
        deadline); should its creation fail, the execution is deleted again."""
        body, inputs = resource_for(execution, retention_seconds=self.retention_seconds)
        compressed = crd.compress(inputs) if inputs is not None else None
        if compressed is not None and len(compressed) > crd.CONFIGMAP_DATA_BYTES:
            raise InputTooLarge(f"the inputs take {len(compressed)} bytes compressed; the cluster stores at most "
                                f"{crd.CONFIGMAP_DATA_BYTES} in one ConfigMap")
        created = None
        try:
            created = await self._objects.create_namespaced_custom_object(
                crd.GROUP, crd.VERSION, self.namespace, crd.PLURAL, body
            )
            if compressed is not None:
                await client.CoreV1Api(self._api).create_namespaced_config_map(
                    self.namespace, crd.inputs_configmap(created, compressed)
                )
        except (client.ApiException, OSError) as error:
            if created is not None:
                await self._delete_quietly(execution.id)
            if isinstance(error, OSError):
                raise BackendError(f"the cluster is unreachable: {error}") from None
            raise BackendError(f"the cluster refused the execution ({error.status} {error.reason})") from None

    async def _delete_quietly(self, execution_id: str) -> None:
        """Delete a half-made execution; if even that fails, the operator fails it at its setup deadline."""
        try:
            await self._objects.delete_namespaced_custom_object(
                crd.GROUP, crd.VERSION, self.namespace, crd.PLURAL, execution_id
            )
        except (client.ApiException, OSError) as error:
            log.warning("could not delete the half-made execution %s: %s", execution_id, error)

    async def _read(self, execution_id: str, tenant: str) -> dict | None:
        """The resource when it exists and belongs to `tenant`; None otherwise."""
        if not re.fullmatch(EXECUTION_ID_PATTERN, execution_id):
            return None  # never an execution of ours, and not a name to send to the API server
        try:
            resource = await self._objects.get_namespaced_custom_object(
                crd.GROUP, crd.VERSION, self.namespace, crd.PLURAL, execution_id
            )
        except client.ApiException as error:
            if error.status == 404:
                return None
            raise BackendError(f"the cluster could not be read ({error.status} {error.reason})") from None
        labels = resource.get("metadata", {}).get("labels") or {}
        if labels.get(crd.LABEL_TENANT) != crd.tenant_label_value(tenant):
            return None
        return resource

    async def get(self, execution_id: str, tenant: str) -> ExecutionResult | None:
        resource = await self._read(execution_id, tenant)
        return result_from_resource(resource) if resource is not None else None

    async def wait(self, execution_id: str, tenant: str, timeout_s: float) -> ExecutionResult | None:
        # Register before reading, so a result that lands in between is not missed.
        future = asyncio.get_running_loop().create_future()
        self._waiters[execution_id].add(future)
        try:
            resource = await self._read(execution_id, tenant)
            if resource is None or _is_finished(resource):
                return result_from_resource(resource) if resource is not None else None
            try:
                resource = await asyncio.wait_for(future, timeout_s)
            except asyncio.TimeoutError:
                resource = await self._read(execution_id, tenant)
            return result_from_resource(resource) if resource is not None else None
        finally:
            waiters = self._waiters.get(execution_id)
            if waiters is not None:
                waiters.discard(future)
                if not waiters:
                    del self._waiters[execution_id]

    def _deliver(self, resource: dict) -> None:
        if not _is_finished(resource):
            return
        for future in self._waiters.get(resource["metadata"]["name"], ()):
            if not future.done():
                future.set_result(resource)

    async def _watch_forever(self) -> None:
        """List, then watch from that list's resourceVersion; start over on any error or expiry.

        The list is body-less (sandbox_api.shared_limits.list_executions): only the executions that
        finished while nobody watched and that someone waits for are read in full.
        """
        selector = f"{CREATED_BY_LABEL}={CREATED_BY}"
        while True:
            try:
                listing, version = await list_executions(self._api, self.namespace, selector)
                for item in listing:
                    if item.finished and item.name in self._waiters:
                        self._deliver(await self._objects.get_namespaced_custom_object(
                            crd.GROUP, crd.VERSION, self.namespace, crd.PLURAL, item.name
                        ))
                stream = watch.Watch()
                async with stream:
                    async for event in stream.stream(
                        self._objects.list_namespaced_custom_object,
                        crd.GROUP, crd.VERSION, self.namespace, crd.PLURAL,
                        label_selector=selector, timeout_seconds=WATCH_SECONDS,
                        resource_version=version,
                    ):
                        if event["type"] in ("ADDED", "MODIFIED"):
                            self._deliver(event["object"])
            except asyncio.CancelledError:
                raise
            except Exception as error:  # any failure: wait a moment and list again, never give up
                log.warning("watching SandboxExecutions failed (%s); retrying", error)
                await asyncio.sleep(RETRY_DELAY_SECONDS)

    async def ready(self) -> tuple[bool, str]:
        try:
            await self._objects.list_namespaced_custom_object(
                crd.GROUP, crd.VERSION, self.namespace, crd.PLURAL, limit=1
            )
        except client.ApiException as error:
            return False, f"cannot list SandboxExecutions in namespace {self.namespace!r}: {error.status} {error.reason}"
        except OSError as error:
            return False, f"the cluster is unreachable: {error}"
        return True, f"kubernetes backend, namespace {self.namespace!r}"

    def create_limits(self, settings: Settings) -> Limits:
        return SharedLimits(settings)  # one key's share holds across every replica

    def languages(self) -> list[LanguageInfo]:
        return [
            LanguageInfo.of(language, language.version)
            for language in (self.catalogue.languages[name] for name in self.catalogue.names())
        ]


def create_backend(settings: Settings, catalogue: Catalogue) -> KubernetesBackend:
    """The backend registry's factory (sandbox_api.backends)."""
    return KubernetesBackend(
        catalogue=catalogue,
        namespace=settings.kubernetes_namespace,
        retention_seconds=settings.result_retention_seconds,
    )
