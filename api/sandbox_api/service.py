"""What the execution routes do, apart from HTTP: resolve a request, admit it under the key's limits,
hand it to the backend, wait for its result, and count it until it ends.

The same on every backend: the backend runs executions, `Limits` counts them (in memory, or in the
cluster for every replica alike), and nothing here asks which one it has.
"""

from __future__ import annotations

import asyncio
import logging
import time

from sandbox_api.backends.base import Backend, BackendError, Execution, InputTooLarge, new_execution_id
from sandbox_api.errors import ApiError
from sandbox_api.limits import Limits, LimitsUnavailable
from sandbox_api.metrics import Metrics
from sandbox_api.models import EncodedFile, ExecuteRequest, ExecutionAccepted, ExecutionResult
from sandbox_contract.catalogue import Catalogue
from sandbox_contract.crd import MAX_INPUT_BYTES, stored_request_size
from sandbox_contract.request import LIMIT_NAMES, ExecutionLimits, InputFile, InvalidSpecError, TestCase, resolve_request
from sandbox_contract.result import Phase

log = logging.getLogger(__name__)

# How long past its own deadline a waiting request waits for a result before answering 202: room
# for the sandbox (or pod) to start and report. The operator's default setup deadline, so a request
# queued behind a burst (50 pods take ~40 s on a 2-core node) still gets its result: a pod not
# running by then ends error_setup, and that is the answer.
WAIT_GRACE_SECONDS = 120
# A watcher gives up on an execution that never finishes (the backend guarantees it does) after this.
WATCH_LIMIT_SECONDS = 3600


def _require_text(name: str, value: str | None) -> None:
    """Lone surrogates survive JSON decoding but cannot be written as UTF-8: refuse them here."""
    if value is not None:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(400, f"{name} is not valid Unicode text (lone surrogate)") from None


class ExecutionService:
    def __init__(self, *, catalogue: Catalogue, limits: ExecutionLimits, backend: Backend, key_limits: Limits,
                 metrics: Metrics):
        self.catalogue = catalogue
        self.limits = limits
        self.backend = backend
        self.key_limits = key_limits
        self.metrics = metrics
        # Tasks that release an execution's admission when it finishes.
        self._watchers: set[asyncio.Task] = set()

    async def stop(self) -> None:
        for watcher in list(self._watchers):
            watcher.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)

    def build(self, request: ExecuteRequest, tenant: str) -> Execution:
        """A validated, fully resolved execution; ApiError(400 or 413) says what to change."""
        _require_text("code", request.code)
        _require_text("input_data", request.input_data)
        for index, arg in enumerate(request.args or ()):
            _require_text(f"args[{index}]", arg)
        for name, value in (request.env or {}).items():
            _require_text(f"env name {name[:80]!r}", name)
            _require_text(f"env {name[:80]!r}", value)
        for index, case in enumerate(request.tests or ()):
            for part in ("input", "expected_output", "name"):
                _require_text(f"tests[{index}].{part}", getattr(case, part))
        files = []
        for path, value in (request.files or {}).items():
            encoded = value if isinstance(value, EncodedFile) else EncodedFile(content=value)
            _require_text(f"file name {path[:80]!r}", path)
            _require_text(f"file {path[:80]!r}", encoded.content)
            files.append(InputFile(path=path, content=encoded.content, encoding=encoded.encoding))
        try:
            resolved = resolve_request(
                catalogue=self.catalogue, limits=self.limits, language=request.language, code=request.code,
                stdin=request.input_data, files=files,
                requested_limits={name: getattr(request, name) for name in LIMIT_NAMES},
                args=request.args or (), env=request.env, comparison=request.comparison,
                tests=[TestCase(input=case.input, expected_output=case.expected_output, name=case.name)
                       for case in request.tests or ()],
                offered=[info.name for info in self.backend.languages()],
            )
        except InvalidSpecError as error:
            raise ApiError(400, str(error)) from None
        stored = stored_request_size(resolved)
        if stored > MAX_INPUT_BYTES:
            raise ApiError(413, f"the code, input, files, args, env and tests take {stored} bytes once stored (each <, > "
                                f"and & counts 6 bytes); at most {MAX_INPUT_BYTES} are accepted")
        return Execution(id=new_execution_id(), tenant=tenant, request=resolved)

    async def execute(self, request: ExecuteRequest, tenant: str) -> ExecutionResult | ExecutionAccepted:
        """Run the request: its result when `wait` and it finished in time, else the accepted id."""
        execution = self.build(request, tenant)
        await self._submit(execution)
        status = Phase.PENDING
        if request.wait:
            try:
                result = await self.backend.wait(
                    execution.id, tenant, execution.request.limits.deadline_seconds + WAIT_GRACE_SECONDS
                )
            except BackendError as error:
                # The execution was accepted and goes on: answer with its id so the client can poll.
                log.warning("waiting for %s failed: %s", execution.id, error)
                result = None
            if result is not None and result.finished:
                return result
            status = result.status if result is not None else status
        return ExecutionAccepted(execution_id=execution.id, status=status)

    async def get(self, execution_id: str, tenant: str) -> ExecutionResult:
        try:
            result = await self.backend.get(execution_id, tenant)
        except BackendError as error:
            raise ApiError(503, f"the sandbox backend is unavailable: {error}") from None
        if result is None:
            raise ApiError(404, f"no execution {execution_id[:64]!r} for this API key (unknown, expired, or not yours)")
        return result

    async def _submit(self, execution: Execution) -> None:
        """Admit the execution under its key's limits and start it; its watcher releases it at the end."""
        try:
            await self.key_limits.admit(execution.tenant, execution.id)
        except LimitsUnavailable as error:
            raise ApiError(503, f"the concurrency limit cannot be checked: {error}") from None
        try:
            await self.backend.submit(execution)
        except InputTooLarge as error:
            self.key_limits.release(execution.tenant)
            raise ApiError(413, str(error)) from None
        except BackendError as error:
            self.key_limits.release(execution.tenant)
            raise ApiError(503, f"the sandbox backend cannot take work: {error}") from None
        watcher = asyncio.create_task(self._watch_until_finished(execution, time.monotonic()))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)

    async def _watch_until_finished(self, execution: Execution, submitted: float) -> None:
        """Release the execution's admission and record its metrics once it ends."""
        result = None
        try:
            deadline = time.monotonic() + WATCH_LIMIT_SECONDS
            while time.monotonic() < deadline:
                try:
                    result = await self.backend.wait(execution.id, execution.tenant, 60)
                except BackendError:
                    await asyncio.sleep(1)  # the backend is briefly unreachable; the execution goes on
                    continue
                if result is None or result.finished:
                    break
        finally:
            self.key_limits.release(execution.tenant)
            status = result.status if result is not None and result.finished else "unknown"
            self.metrics.executions.labels(execution.language, status).inc()
            self.metrics.duration.labels(execution.language).observe(time.monotonic() - submitted)
