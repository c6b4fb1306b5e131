"""The local backend: each execution is the runner under bubblewrap on this host.

A fixed number of workers run sandboxes at once, handed out fairly between keys (FairSlots); the
API's admission limits bound how many wait.
Results live in memory (ExecutionStore) for GET, bounded in bytes and time.

Warm pool (when cgroups are available): starting bubblewrap and the runner, and moving them into a
fresh cgroup (the kernel waits for an RCU grace period on every cgroup move), costs most of an
execution's latency. So up to `workers` sandboxes are started ahead of time, each in its own
cgroup, the runner waiting for its spec on stdin. An execution takes one, lowers its memory limit
to the request's, and hands it the spec; every sandbox runs exactly one execution.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import shutil
import subprocess
from asyncio.subprocess import Process
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from sandbox_api.backends.base import Backend, BackendError, Execution
from sandbox_api.backends.bubblewrap import (
    RUNNER_MEMORY_HEADROOM_MB,
    SandboxHost,
    kill_sandbox,
    prepare_host,
    run_spec,
    start_sandbox,
)
from sandbox_api.backends.cgroups import SandboxCgroup, cgroups_usable, remove_server_dirs, remove_stale_server_dirs
from sandbox_api.limits import FairSlots
from sandbox_api.models import ExecutionResult, LanguageInfo
from sandbox_api.store import ExecutionStore
from sandbox_contract.catalogue import Catalogue, Language
from sandbox_contract.request import ExecutionLimits
from sandbox_contract.result import Phase, Result
from sandbox_contract.runner_spec import DEFAULT_WORKDIR, build_runner_spec
from sandbox_runner import OUTPUT_LIMITS

log = logging.getLogger(__name__)

# bubblewrap (two processes), the joining shell and the runner count against pids.max as well.
SUPERVISOR_PIDS = 8
SANDBOX_PATH = "/usr/bin:/bin"


@dataclass(frozen=True)
class Sandbox:
    """A started bubblewrap + runner, waiting for its spec; its cgroup when cgroups are used."""

    process: Process
    cgroup: SandboxCgroup | None


def detect_version(language: Language) -> str | None:
    """The version the toolchain reports, e.g. '3.11.2'; None when one of its programs is not installed here."""
    if not all(shutil.which(program, path=SANDBOX_PATH) for program in language.executables):
        return None
    command = language.version_argv
    try:
        completed = subprocess.run(
            [shutil.which(command[0], path=SANDBOX_PATH) or command[0], *command[1:]],
            capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"\d+(?:\.\d+)+", completed.stdout + completed.stderr)
    return match.group(0) if completed.returncode == 0 and match else None


class LocalBackend(Backend):
    name = "local"

    def __init__(
        self,
        *,
        catalogue: Catalogue,
        limits: ExecutionLimits,
        runner_source: Path,
        workers: int,
        store: ExecutionStore,
    ):
        self.catalogue = catalogue
        self.limits = limits
        self.runner_source = runner_source
        self.store = store
        self._workers = FairSlots(workers)  # a freed worker goes to the waiting key holding the fewest
        self._pool_size = workers
        self._warm: deque[Sandbox] = deque()
        self._warming = 0
        self._tasks: set[asyncio.Task] = set()  # runs and warm-ups: cancelled at stop
        self._cleanups: set[asyncio.Task] = set()  # disposals: always awaited, never cancelled
        self._versions: dict[str, str] = {}
        self._host: SandboxHost | None = None
        self._use_cgroups = False
        self.enforcement = "not started"

    async def start(self) -> None:
        if shutil.which("bwrap") is None:
            raise BackendError("bubblewrap (bwrap) is not installed: run hack/install-deps.sh")
        if not self.runner_source.is_file():
            raise BackendError(f"the runner is missing at {self.runner_source}")
        self._host = prepare_host(
            self.runner_source, [path for language in self.catalogue.languages.values() for path in language.config_dirs])
        self._use_cgroups, why = cgroups_usable()
        if self._use_cgroups:
            await asyncio.to_thread(remove_stale_server_dirs)
            self.enforcement = f"memory and process limits by {why}"
        else:
            self.enforcement = (
                f"memory limit NOT enforced ({why}; cgroups need root): RLIMIT_DATA caps each process's "
                "private memory only, not shared memory or memfd; processes capped per uid by RLIMIT_NPROC; "
                "no CPU limit")
            log.warning("local backend: %s", self.enforcement)
        for language in self.catalogue.languages.values():
            version = await asyncio.to_thread(detect_version, language)
            if version is None:
                log.warning("local backend: %s (%s) is not installed here; it is not offered",
                            language.name, ", ".join(language.executables))
            else:
                self._versions[language.name] = version
        log.info("local backend ready: %s; languages %s", self.enforcement, self._versions)
        self._replenish()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, *self._cleanups, return_exceptions=True)
        while self._warm:
            await self._dispose(self._warm.popleft())
        if self._use_cgroups:
            remove_server_dirs()

    def languages(self) -> list[LanguageInfo]:
        return [
            LanguageInfo.of(language, self._versions[language.name])
            for language in self.catalogue.languages.values()
            if language.name in self._versions
        ]

    async def ready(self) -> tuple[bool, str]:
        if self._host is None:
            return False, "local backend not started"
        return bool(self._versions), f"local bubblewrap sandbox; {self.enforcement}"

    def _spawn(self, coroutine, name: str, *, into: set[asyncio.Task] | None = None) -> None:
        tasks = self._tasks if into is None else into
        task = asyncio.create_task(coroutine, name=name)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def _replenish(self) -> None:
        """Start warm sandboxes until the pool is full (only with cgroups: see the module doc)."""
        while self._use_cgroups and len(self._warm) + self._warming < self._pool_size:
            self._warming += 1
            self._spawn(self._warm_one(), "warm-sandbox")

    async def _warm_one(self) -> None:
        try:
            sandbox = await self._start(self.limits.max_memory_mb)
        except Exception:
            log.exception("cannot start a warm sandbox")
            return
        finally:
            self._warming -= 1
        self._warm.append(sandbox)

    async def _start(self, memory_mb: int) -> Sandbox:
        memory_bytes = (memory_mb + RUNNER_MEMORY_HEADROOM_MB) << 20
        cgroup = SandboxCgroup.new() if self._use_cgroups else None
        if cgroup is not None:
            await asyncio.to_thread(
                cgroup.create, memory_bytes=memory_bytes, max_pids=self.limits.max_processes + SUPERVISOR_PIDS
            )
        try:
            process = await start_sandbox(self._host, workdir=DEFAULT_WORKDIR, cgroup=cgroup, memory_bytes=memory_bytes)
        except BaseException:
            if cgroup is not None:
                await asyncio.to_thread(cgroup.remove)
            raise
        return Sandbox(process=process, cgroup=cgroup)

    async def _take(self, memory_mb: int) -> Sandbox:
        """A warm sandbox limited to `memory_mb` (plus the runner's headroom), else a fresh one."""
        while self._warm:
            sandbox = self._warm.popleft()
            if sandbox.process.returncode is None:
                sandbox.cgroup.lower_memory_limit((memory_mb + RUNNER_MEMORY_HEADROOM_MB) << 20)
                sandbox.cgroup.restore_priority()
                return sandbox
            await self._dispose(sandbox)
        return await self._start(memory_mb)

    async def _dispose(self, sandbox: Sandbox) -> None:
        await kill_sandbox(sandbox.process, sandbox.cgroup)
        if sandbox.cgroup is not None:
            await asyncio.to_thread(sandbox.cgroup.remove)

    async def submit(self, execution: Execution) -> None:
        if execution.language not in self._versions:
            raise BackendError(f"language {execution.language!r} is not installed on this host")
        self.store.add(execution.id, execution.tenant, _state(execution, Phase.PENDING))
        self._spawn(self._run(execution), execution.id)

    async def wait(self, execution_id: str, tenant: str, timeout_s: float) -> ExecutionResult | None:
        return await self.store.wait(execution_id, tenant, timeout_s)

    async def get(self, execution_id: str, tenant: str) -> ExecutionResult | None:
        return self.store.get(execution_id, tenant)

    async def _run(self, execution: Execution) -> None:
        async with self._workers.slot(execution.tenant):
            self.store.update(execution.id, _state(execution, Phase.RUNNING))
            try:
                result = await self._run_sandbox(execution)
            except asyncio.CancelledError:
                self.store.update(execution.id, _state(execution, Phase.ERROR_SETUP, "the server shut down during the run"))
                raise
            except Exception:
                log.exception("execution %s failed inside the local backend", execution.id)
                result = _state(execution, Phase.ERROR_SETUP, "internal error while running the sandbox")
            self.store.update(execution.id, result)

    async def _run_sandbox(self, execution: Execution) -> ExecutionResult:
        spec = build_runner_spec(
            execution.request,
            # Without cgroups the runner applies the process limit itself (rlimit).
            max_processes=None if self._use_cgroups else self.limits.max_processes,
        )
        sandbox = await self._take(execution.request.limits.max_memory_mb)
        self._replenish()
        try:
            document, runner_stderr = await run_spec(sandbox.process, spec, result_cap=OUTPUT_LIMITS["result_bytes"],
                                                     stages_seconds=execution.request.limits.deadline_seconds)
            # The kernel counts an OOM kill when it happens, before the runner reports.
            oom_kills = sandbox.cgroup.oom_kills() if sandbox.cgroup is not None else 0
        finally:
            # Killing and removing the cgroup happen after the answer, off the request's path.
            self._spawn(self._dispose(sandbox), "dispose", into=self._cleanups)
        return _result_from(execution, document, runner_stderr, oom_kills)


def _state(execution: Execution, status: Phase, reason: str | None = None) -> ExecutionResult:
    return _answer(execution, Result(status=status, reason=reason, limits=execution.request.limits))


def _answer(execution: Execution, result: Result) -> ExecutionResult:
    return ExecutionResult.of(result, execution_id=execution.id, language=execution.language)


def _result_from(execution: Execution, document: dict | None, runner_stderr: str, oom_kills: int) -> ExecutionResult:
    """The result, with the cgroup's verdict on memory where the runner could not see it."""
    limits = execution.request.limits
    oom_reason = f"out of memory: exceeded the {limits.max_memory_mb} MB limit"
    if document is None:
        if oom_kills:
            return _answer(execution, Result.failure(Phase.ERROR_RUNTIME, oom_reason, oom_killed=True, limits=limits))
        last_line = runner_stderr.strip().splitlines()[-1:] or ["no output"]
        log.warning("execution %s: the runner gave no result; its stderr: %s", execution.id, runner_stderr[-2000:])
        return _state(execution, Phase.ERROR_SETUP, f"the sandbox failed without a result: {last_line[0][:300]}")
    request = execution.request
    result = Result.from_runner(document, limits, request.tests, request.comparison)
    if oom_kills and result.status == Phase.ERROR_RUNTIME:
        result = dataclasses.replace(result, oom_killed=True, reason=oom_reason, limit_exceeded="memory")
    return _answer(execution, result)
