"""Start the runner under bubblewrap on this host, hand it one spec, read its result document.

The sandbox: new user, pid, ipc, uts, net (no network) and cgroup namespaces; all capabilities
dropped; an unprivileged uid both inside and outside the namespaces; /usr read-only (Debian's
merged /usr: /bin and /lib* are links into it) and nothing else of the host; size-capped tmpfs
for the work dir, /tmp and /dev/shm; a read-only root and /dev; a clean environment. Memory and
process limits come from the sandbox's own cgroup when we are root, else from rlimits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import tempfile
from asyncio.subprocess import Process
from dataclasses import dataclass
from pathlib import Path

from sandbox_api.backends.cgroups import SandboxCgroup
from sandbox_runner import RESULT_MARKER, ResultLineError, read_result

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

# argv: cgroup.procs files, "--", the command. The shell writes its own pid into each file, then
# execs the command: everything the execution starts is born inside the cgroups.
JOIN_CGROUPS_SCRIPT = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'


@dataclass(frozen=True)
class SandboxHost:
    """What the sandbox needs from this host, prepared once at start."""

    files_dir: Path  # root-owned copies of the runner and a minimal /etc/passwd and /etc/group


def prepare_host(runner_source: Path) -> SandboxHost:
    """Copy what the sandbox binds read-only into a private directory the sandbox user can read."""
    files_dir = Path(tempfile.mkdtemp(prefix="sandbox-api-"))
    files_dir.chmod(0o755)
    files = {
        "runner.py": runner_source.read_text(),
        "passwd": f"sandbox:x:{SANDBOX_UID}:{SANDBOX_UID}:sandbox:/sandbox/work:/bin/sh\n",
        "group": f"sandbox:x:{SANDBOX_UID}:\n",
    }
    for name, text in files.items():
        (files_dir / name).write_text(text)
        (files_dir / name).chmod(0o644)
    return SandboxHost(files_dir=files_dir)


def bwrap_argv(host: SandboxHost, *, workdir: str) -> list[str]:
    """The bubblewrap command line that runs the runner with its spec on stdin."""
    argv = [
        "bwrap",
        "--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-net",
        "--unshare-cgroup-try",
        "--die-with-parent", "--new-session", "--cap-drop", "ALL", "--disable-userns",
        "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--hostname", "sandbox",
        "--ro-bind", "/usr", "/usr",
        "--symlink", "usr/bin", "/bin", "--symlink", "usr/sbin", "/sbin",
        "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
        "--dir", "/etc",
    ]
    for name in ("passwd", "group"):
        argv += ["--ro-bind", str(host.files_dir / name), f"/etc/{name}"]
    for name in ("ld.so.cache", "localtime"):  # the dynamic linker's cache makes start-up faster
        if os.path.exists(f"/etc/{name}"):
            argv += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
    argv += [
        "--proc", "/proc", "--dev", "/dev",
        # /dev is itself a tmpfs: read-only, with a small /dev/shm for POSIX shared memory.
        "--size", str(SHM_SIZE_MB << 20), "--tmpfs", "/dev/shm", "--remount-ro", "/dev",
        "--size", str(TMP_SIZE_MB << 20), "--tmpfs", "/tmp",
        "--size", str(WORKDIR_SIZE_MB << 20), "--tmpfs", workdir,
        "--ro-bind", str(host.files_dir / "runner.py"), RUNNER_PATH_INSIDE,
        "--remount-ro", "/",
        "--chdir", workdir, "--clearenv", "--setenv", "PATH", "/usr/bin:/bin",
        "--", "python3", "-I", "-S", RUNNER_PATH_INSIDE, "-",
    ]
    return argv


def launch_argv(host: SandboxHost, *, workdir: str, cgroup: SandboxCgroup | None, memory_bytes: int) -> list[str]:
    """The full command: join the cgroups (or cap memory by rlimit without them), drop to nobody, bwrap.

    Core dumps are off everywhere: a host's core_pattern helper must never run for sandboxed code.
    """
    command = bwrap_argv(host, workdir=workdir)
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


async def _read_capped(stream: asyncio.StreamReader, cap: int) -> bytes:
    """Read to EOF, keeping at most `cap` bytes, so a misbehaving runner cannot exhaust our memory."""
    kept = bytearray()
    while chunk := await stream.read(65536):
        if len(kept) < cap:
            kept += chunk[: cap - len(kept)]
    return bytes(kept)


async def start_sandbox(host: SandboxHost, *, workdir: str, cgroup: SandboxCgroup | None, memory_bytes: int) -> Process:
    """Start bubblewrap and the runner inside it; the runner waits for its spec on stdin."""
    return await asyncio.create_subprocess_exec(
        *launch_argv(host, workdir=workdir, cgroup=cgroup, memory_bytes=memory_bytes),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
        start_new_session=True,
        close_fds=True,
    )


async def kill_sandbox(process: Process) -> None:
    """SIGKILL bubblewrap; --die-with-parent and the pid namespace take everything inside with it."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    await process.wait()


async def run_spec(process: Process, spec: dict, *, result_cap: int) -> tuple[dict | None, str]:
    """Hand the spec to a started sandbox; (result document or None, the runner's stderr tail).

    Returns as soon as the result line is complete: tearing the namespaces down is the caller's
    (background) business. The caller always disposes of the sandbox afterwards.
    """
    deadline = spec["timeout_seconds"] + SETUP_GRACE_SECONDS
    stderr = asyncio.create_task(_read_capped(process.stderr, RUNNER_STDERR_CAP))
    try:
        async with asyncio.timeout(deadline):
            await _feed(process, json.dumps(spec).encode())
            stdout = await _read_result_line(process.stdout, result_cap + 4096)
            document = parse_result(stdout)
            if document is not None:
                return document, ""
            return None, (await stderr).decode("utf-8", "replace")  # no result: the runner's last words
    except TimeoutError:
        log.warning("sandbox did not report within %s s", deadline)
        return None, f"the sandbox did not report within {deadline} s"
    finally:
        stderr.cancel()


async def _read_result_line(stream: asyncio.StreamReader, cap: int) -> bytes:
    """The runner's stdout up to its newline-terminated result line (or EOF), at most `cap` bytes kept."""
    kept = bytearray()
    while chunk := await stream.read(65536):
        if len(kept) < cap:
            kept += chunk[: cap - len(kept)]
        if kept.endswith(b"\n") and RESULT_MARKER_BYTES in kept:
            break
    return bytes(kept)


async def _feed(process: Process, data: bytes) -> None:
    # A runner that dies before reading its spec closes the pipe; its exit status tells the story.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        process.stdin.write(data)
        await process.stdin.drain()
    process.stdin.close()
