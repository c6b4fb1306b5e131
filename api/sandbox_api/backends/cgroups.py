"""Per-sandbox cgroup v1 memory and pids controllers for the local backend.

Each sandbox gets a fresh cgroup under /sys/fs/cgroup/{memory,pids}/sandbox-api/<server pid>/.
The spawning shell writes its own pid into cgroup.procs *before* it execs bubblewrap, so every
process of the sandbox is born inside the limits (no window in which a fork escapes them).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import time
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PARENT = "sandbox-api"
CONTROLLERS = ("memory", "pids")
KILL_SECONDS = 5  # bound on emptying a sandbox's cgroups


def cgroups_usable() -> tuple[bool, str]:
    """Whether this process can create v1 memory and pids cgroups, and why not."""
    if os.geteuid() != 0:
        return False, "not running as root"
    for controller in CONTROLLERS:
        parent = CGROUP_ROOT / controller / PARENT
        try:
            parent.mkdir(exist_ok=True)
        except OSError as error:
            return False, f"cannot create {parent}: {error.strerror}"
        if not (parent / "cgroup.procs").exists():
            return False, f"{CGROUP_ROOT / controller} is not a cgroup v1 hierarchy"
    return True, "cgroup v1 memory and pids controllers"


def server_dir(controller: str) -> Path:
    """This server's own parent, so servers side by side never touch each other's cgroups."""
    return CGROUP_ROOT / controller / PARENT / str(os.getpid())


def remove_stale_server_dirs() -> None:
    """Remove the empty cgroups left by servers that were killed (their pid no longer exists)."""
    for controller in CONTROLLERS:
        for stale in (CGROUP_ROOT / controller / PARENT).iterdir():
            if stale.is_dir() and stale.name.isdigit() and not Path(f"/proc/{stale.name}").exists():
                for sandbox in (path for path in stale.iterdir() if path.is_dir()):
                    _rmdir_if_empty(sandbox)
                _rmdir_if_empty(stale)


def _rmdir_if_empty(path: Path) -> None:
    try:
        path.rmdir()  # fails while a process is inside: such a cgroup is left alone
    except OSError:
        pass


def remove_server_dirs() -> None:
    """Remove this server's (by now empty) parents."""
    for controller in CONTROLLERS:
        _rmdir_if_empty(server_dir(controller))


@dataclass(frozen=True)
class SandboxCgroup:
    """The memory and pids cgroups of one sandbox."""

    name: str

    @classmethod
    def new(cls) -> SandboxCgroup:
        return cls("sbx-" + secrets.token_hex(8))

    def path(self, controller: str) -> Path:
        return server_dir(controller) / self.name

    @property
    def procs_files(self) -> list[str]:
        """The cgroup.procs files the spawning shell joins before exec."""
        return [str(self.path(controller) / "cgroup.procs") for controller in CONTROLLERS]

    def create(self, *, memory_bytes: int, max_pids: int) -> None:
        for controller in CONTROLLERS:
            self.path(controller).mkdir(parents=True)
        memory = self.path("memory")
        (memory / "memory.limit_in_bytes").write_text(str(memory_bytes))
        memsw = memory / "memory.memsw.limit_in_bytes"
        if memsw.exists():  # also cap swap, else the limit only moves pages to swap
            memsw.write_text(str(memory_bytes))
        (memory / "memory.swappiness").write_text("0")
        (self.path("pids") / "pids.max").write_text(str(max_pids))

    def lower_memory_limit(self, memory_bytes: int) -> None:
        """Set a limit at or below the current one (memory before memory+swap, as the kernel requires)."""
        memory = self.path("memory")
        (memory / "memory.limit_in_bytes").write_text(str(memory_bytes))
        memsw = memory / "memory.memsw.limit_in_bytes"
        if memsw.exists():
            memsw.write_text(str(memory_bytes))

    def restore_priority(self) -> None:
        """The server's own CPU priority for every process in the sandbox (started niced).

        A process forked after this read keeps the low priority: that costs speed, never safety.
        """
        ours = os.getpriority(os.PRIO_PROCESS, 0)
        for pid in (self.path("pids") / "cgroup.procs").read_text().split():
            try:
                os.setpriority(os.PRIO_PROCESS, int(pid), ours)
            except ProcessLookupError:
                pass

    def oom_kills(self) -> int:
        """How many processes the kernel killed for exceeding the memory limit."""
        try:
            text = (self.path("memory") / "memory.oom_control").read_text()
        except OSError:
            return 0
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        # Kernels without the oom_kill counter: a hit limit is the best evidence available.
        failcnt = self.path("memory") / "memory.failcnt"
        return 1 if failcnt.exists() and int(failcnt.read_text()) > 0 else 0

    def kill_all(self, timeout: float = KILL_SECONDS) -> bool:
        """SIGKILL every process in the sandbox's cgroups until they are empty; False if time ran out.

        Repeated because a process may fork between the read of cgroup.procs and its kill; the pids
        limit bounds how many can appear, and a killed process forks no more.
        """
        deadline = time.monotonic() + timeout
        while pids := self._members():
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)  # killed tasks take a moment to leave the cgroup
        return True

    def _members(self) -> set[int]:
        members: set[int] = set()
        for controller in CONTROLLERS:
            with contextlib.suppress(FileNotFoundError):
                members.update(int(pid) for pid in (self.path(controller) / "cgroup.procs").read_text().split())
        return members

    def remove(self) -> None:
        """Kill whatever is left in the cgroups, then remove them (OSError if something survives)."""
        if not self.kill_all():
            raise OSError(f"processes of {self.name} survived SIGKILL for {KILL_SECONDS} s")
        deadline = time.monotonic() + KILL_SECONDS
        for controller in CONTROLLERS:
            path = self.path(controller)
            while path.exists():
                try:
                    path.rmdir()
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.005)  # an exited task can linger a moment as a member
