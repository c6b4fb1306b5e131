"""Start the runner under bubblewrap on this host, hand it one spec, read its result document.

The sandbox: new user, pid, ipc, uts, net (no network) and cgroup namespaces; all capabilities
dropped; an unprivileged uid both inside and outside the namespaces; /usr read-only (Debian's
merged /usr: /bin and /lib* are links into it) and nothing else of the host; size-capped tmpfs
for the work dir, /tmp and /dev/shm; a read-only root and /dev; a clean environment; the seccomp
filter of `seccomp.py`. Memory and process limits come from the sandbox's own cgroup when we are
root, else from rlimits.

The runner is pid 1 of the sandbox (`--as-pid-1`): nothing else runs there but the program, which
cannot signal, trace or read the runner (it is non-dumpable and ignores every signal; pid 1 is
immune to SIGKILL and SIGSTOP from inside its namespace). When the runner exits, the kernel kills
everything left in its pid namespace. The files the sandbox needs from us (the runner, passwd,
group) are copied in from memory (`--ro-bind-data`), so no host path shows in its /proc.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from asyncio.subprocess import Process
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sandbox_api.backends.cgroups import SandboxCgroup
from sandbox_api.backends.seccomp import build_filter_bpf
from sandbox_runner import RESULT_MARKER, ResultLineError, read_result, runner_command

log = logging.getLogger(__name__)

RESULT_MARKER_BYTES = RESULT_MARKER.encode()
RUNNER_PATH_INSIDE = "/sandbox/runner.py"
SANDBOX_UID = 65534  # nobody: the program's uid inside and, when we are root, outside too
# The runner (a Python interpreter) and bubblewrap live in the execution's cgroup next to the
# program; this much memory on top of the request keeps them alive when the program hits its limit.
RUNNER_MEMORY_HEADROOM_MB = 32
WORKDIR_SIZE_MB = 64
TMP_SIZE_MB = 64
SHM_SIZE_MB = 16
# Time for bubblewrap and the runner to start and to report, on top of the program's own timeout.
SETUP_GRACE_SECONDS = 15
RUNNER_STDERR_CAP = 64 * 1024
# Once everything in the sandbox is killed, its exit and its pipes' end follow at once; this bounds
# the wait should the kernel be slow to tear a namespace down.
DISPOSE_SECONDS = 5

# argv: cgroup.procs files, "--", the command. The shell writes its own pid into each file, then
# execs the command: everything the execution starts is born inside the cgroups.
JOIN_CGROUPS_SCRIPT = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'


@dataclass(frozen=True)
class SandboxHost:
    """What every sandbox gets from this host, prepared once at start."""

    files: dict[str, bytes]  # path inside the sandbox -> content, copied in read-only
    seccomp_bpf: bytes
    config_dirs: tuple[str, ...] = ()  # directories under /etc bound read-only (the toolchains')


def prepare_host(runner_source: Path, config_dirs: Iterable[str] = ()) -> SandboxHost:
    """The runner, a minimal /etc/passwd and /etc/group, the compiled seccomp filter, and those of the
    toolchains' `config_dirs` this host has."""
    return SandboxHost(
        config_dirs=tuple(path for path in dict.fromkeys(config_dirs) if os.path.isdir(path)),
        files={
            RUNNER_PATH_INSIDE: runner_source.read_bytes(),
            "/etc/passwd": f"sandbox:x:{SANDBOX_UID}:{SANDBOX_UID}:sandbox:/sandbox/work:/bin/sh\n".encode(),
            "/etc/group": f"sandbox:x:{SANDBOX_UID}:\n".encode(),
        },
        seccomp_bpf=build_filter_bpf(),
    )


@dataclass(frozen=True)
class DataFds:
    """Descriptors bubblewrap reads the sandbox's files and its seccomp filter from, one launch's worth."""

    files: dict[str, int]  # path inside the sandbox -> fd
    seccomp: int

    @classmethod
    def open(cls, host: SandboxHost) -> DataFds:
        return cls(files={path: _memory_file(data) for path, data in host.files.items()},
                   seccomp=_memory_file(host.seccomp_bpf))

    def all(self) -> list[int]:
        return [*self.files.values(), self.seccomp]

    def close(self) -> None:
        for fd in self.all():
            os.close(fd)


def _memory_file(data: bytes) -> int:
    """An anonymous in-memory file holding `data`, positioned at its start."""
    fd = os.memfd_create("sandbox-data", os.MFD_CLOEXEC)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def bwrap_argv(fds: DataFds, *, workdir: str, config_dirs: Iterable[str] = ()) -> list[str]:
    """The bubblewrap command line that runs the runner, as pid 1, with its spec on stdin."""
    argv = [
        "bwrap",
        "--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-net",
        "--unshare-cgroup-try", "--as-pid-1",
        "--die-with-parent", "--new-session", "--cap-drop", "ALL", "--disable-userns",
        "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--hostname", "sandbox",
        "--seccomp", str(fds.seccomp),
        "--ro-bind", "/usr", "/usr",
        "--symlink", "usr/bin", "/bin", "--symlink", "usr/sbin", "/sbin",
        "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
        "--dir", "/etc",
    ]
    # The dynamic linker's cache makes start-up faster; Debian's alternatives are links the
    # toolchains' commands go through (/usr/bin/java -> /etc/alternatives/java -> /usr/lib/jvm/...).
    for name in ("ld.so.cache", "localtime", "alternatives"):
        if os.path.exists(f"/etc/{name}"):
            argv += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
    for path in config_dirs:
        argv += ["--ro-bind", path, path]
    argv += [
        "--proc", "/proc", "--dev", "/dev",
        # /dev is itself a tmpfs: read-only, with a small /dev/shm for POSIX shared memory.
        "--size", str(SHM_SIZE_MB << 20), "--tmpfs", "/dev/shm", "--remount-ro", "/dev",
        "--size", str(TMP_SIZE_MB << 20), "--tmpfs", "/tmp",
        "--size", str(WORKDIR_SIZE_MB << 20), "--tmpfs", workdir,
    ]
    for path, fd in fds.files.items():
        argv += ["--ro-bind-data", str(fd), path]
    argv += [
        "--remount-ro", "/",
        "--chdir", workdir, "--clearenv", "--setenv", "PATH", "/usr/bin:/bin",
        "--", *runner_command(RUNNER_PATH_INSIDE, "-"),
    ]
    return argv


def launch_argv(fds: DataFds, *, workdir: str, cgroup: SandboxCgroup | None, memory_bytes: int,
                config_dirs: Iterable[str] = ()) -> list[str]:
    """The full command: join the cgroups (or cap memory by rlimit without them), drop to nobody, bwrap.

    Core dumps are off everywhere: a host's core_pattern helper must never run for sandboxed code.
    """
    command = bwrap_argv(fds, workdir=workdir, config_dirs=config_dirs)
    if os.geteuid() == 0:
        command = ["setpriv", f"--reuid={SANDBOX_UID}", f"--regid={SANDBOX_UID}", "--clear-groups", "--", *command]
    if cgroup is None:
        # No cgroups (not root): cap each process's data segment instead (see README).
        return ["prlimit", f"--data={memory_bytes}", "--core=0", "--", *command]
    # Warm sandboxes start at low CPU priority, so starting one never slows a running execution;
    # taking one from the pool restores the server's priority before the program starts.
    return ["/bin/sh", "-c", JOIN_CGROUPS_SCRIPT, "join", *cgroup.procs_files, "--",
            "prlimit", "--core=0", "--", "nice", "-n", "15", *command]


def parse_result(stdout: bytes) -> dict | None:
    """The last result line of the runner's stdout, or None when there is none or it is not JSON."""
    try:
        return read_result(stdout.decode("utf-8", "replace"))
    except ResultLineError:
        return None


async def _read_capped(stream: asyncio.StreamReader, cap: int, *, until_result_line: bool = False) -> bytes:
    """Read to EOF, or to a newline-terminated result line when `until_result_line`; at most `cap` bytes
    are kept, so a misbehaving runner cannot exhaust our memory."""
    kept = bytearray()
    while chunk := await stream.read(65536):
        if len(kept) < cap:
            kept += chunk[: cap - len(kept)]
        if until_result_line and kept.endswith(b"\n") and RESULT_MARKER_BYTES in kept:
            break
    return bytes(kept)


async def start_sandbox(host: SandboxHost, *, workdir: str, cgroup: SandboxCgroup | None, memory_bytes: int) -> Process:
    """Start bubblewrap and the runner inside it; the runner waits for its spec on stdin."""
    fds = DataFds.open(host)
    try:
        return await asyncio.create_subprocess_exec(
            *launch_argv(fds, workdir=workdir, cgroup=cgroup, memory_bytes=memory_bytes, config_dirs=host.config_dirs),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
            start_new_session=True,
            close_fds=True,
            pass_fds=fds.all(),
        )
    finally:
        fds.close()


async def kill_sandbox(process: Process, cgroup: SandboxCgroup | None) -> None:
    """Kill everything in the sandbox, then wait (bounded) for bubblewrap's exit and its pipes' end.

    With a cgroup, every process of the sandbox (bubblewrap included) is in it and is killed until
    it is empty. Without one, SIGKILL to bubblewrap's process group: --die-with-parent kills the
    runner, and the end of the runner (pid 1) ends its whole pid namespace.
    """
    if cgroup is not None:
        await asyncio.to_thread(cgroup.kill_all)
    elif process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    try:
        async with asyncio.timeout(DISPOSE_SECONDS):
            await process.wait()
    except TimeoutError:
        log.error("sandbox %s: its pipes were still open %s s after it was killed", process.pid, DISPOSE_SECONDS)


async def run_spec(process: Process, spec: dict, *, stages_seconds: float, result_cap: int) -> tuple[dict | None, str]:
    """Hand the spec to a started sandbox; (result document or None, the runner's stderr tail).
    `stages_seconds` is what the compile stage and the program may take together.

    Returns as soon as the result line is complete: tearing the namespaces down is the caller's
    (background) business. The caller always disposes of the sandbox afterwards.
    """
    deadline = stages_seconds + SETUP_GRACE_SECONDS
    stderr = asyncio.create_task(_read_capped(process.stderr, RUNNER_STDERR_CAP))
    try:
        async with asyncio.timeout(deadline):
            await _feed(process, json.dumps(spec).encode())
            stdout = await _read_capped(process.stdout, result_cap + 4096, until_result_line=True)
            document = parse_result(stdout)
            if document is not None:
                return document, ""
            return None, (await stderr).decode("utf-8", "replace")  # no result: the runner's last words
    except TimeoutError:
        log.warning("sandbox did not report within %s s", deadline)
        return None, f"the sandbox did not report within {deadline} s"
    finally:
        stderr.cancel()


async def _feed(process: Process, data: bytes) -> None:
    # A runner that dies before reading its spec closes the pipe; its exit status tells the story.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        process.stdin.write(data)
        await process.stdin.drain()
    process.stdin.close()
