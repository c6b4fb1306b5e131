"""The local backend under attack: each test runs the real attack inside a real sandbox.

The program shares the runner's uid, so every process it can see is tried: traced, signalled,
written to through /proc. What must hold: the deadline, the real exit code and output, the limits,
and nothing left behind on the host.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.integration.conftest import UNTHROTTLED

UNPRIVILEGED_UID = 4242  # the server's uid in the non-root mode: neither root nor the sandbox's 65534


@pytest.fixture(scope="module")
def unprivileged_api(start_api_server):
    """A server that is not root: no cgroups, bubblewrap unprivileged, rlimits only."""
    return start_api_server(as_uid=UNPRIVILEGED_UID, **UNTHROTTLED)


@pytest.fixture(params=["root", "not root"])
def attacked(request, api, unprivileged_api):
    """The attacks that must fail in both modes run against both servers."""
    if request.param == "root" and os.geteuid() != 0:
        pytest.skip("the tests do not run as root")
    return api if request.param == "root" else unprivileged_api

# Prints one line per visible process other than itself: "pid errno-name" for each attempt.
TRACE_EVERY_PROCESS = """
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
PTRACE_ATTACH, PTRACE_SEIZE = 16, 0x4206
for pid in sorted(int(name) for name in os.listdir("/proc") if name.isdigit()):
    if pid == os.getpid():
        continue
    for request in (PTRACE_ATTACH, PTRACE_SEIZE):
        if libc.ptrace(request, pid, 0, 0) == 0:
            print(pid, "TRACED")
        else:
            print(pid, errno.errorcode[ctypes.get_errno()])
iov = (ctypes.c_char * 8)()
local = (ctypes.c_void_p * 2)(ctypes.addressof(iov), 8)
print("process_vm_readv", libc.process_vm_readv(1, local, 1, local, 1, 0), errno.errorcode[ctypes.get_errno()])
"""


def test_no_process_in_the_sandbox_can_be_traced(attacked):
    result = attacked.execute(language="python", code=TRACE_EVERY_PROCESS)
    lines = result["stdout"].splitlines()
    assert lines[-1] == "process_vm_readv -1 EPERM", result
    attempts = lines[:-1]
    assert attempts and all(line.endswith(" EPERM") for line in attempts), result
    assert "1 EPERM" in attempts, "the runner (pid 1) is visible and was tried"


SIGNAL_EVERY_PROCESS = """
import os, signal, time
others = [int(name) for name in os.listdir("/proc") if name.isdigit() and int(name) != os.getpid()]
for signum in sorted(set(range(1, signal.NSIG)) - {signal.SIGKILL, signal.SIGSTOP}) + [signal.SIGSTOP, signal.SIGKILL]:
    for pid in others:
        try:
            os.kill(pid, signum)
        except OSError:
            pass
time.sleep(0.2)  # time for any delivered signal to act on the runner
print("still here", others)
raise SystemExit(42)
"""


def test_signals_to_every_process_leave_the_runner_untouched(attacked):
    result = attacked.execute(language="python", code=SIGNAL_EVERY_PROCESS, timeout_seconds=5)
    assert (result["status"], result["exit_code"]) == ("error_runtime", 42), result
    assert result["stdout"] == "still here [1]\n", "only the runner is visible, and it reported"


def test_kill_minus_one_kills_only_the_programs_own_processes(attacked):
    code = "sleep 30 & sleep 30 & kill -9 -1; wait; echo survived; exit 3"
    result = attacked.execute(language="bash", code=code, timeout_seconds=10)
    assert (result["exit_code"], result["stdout"]) == (3, "survived\n"), result


def test_a_stopped_runner_cannot_stretch_the_deadline(attacked):
    """SIGSTOP to pid 1 is dropped; the program is stopped at its 1 s limit."""
    code = "import os, signal, time\nos.kill(1, signal.SIGSTOP)\nos.kill(1, signal.SIGINT)\ntime.sleep(60)"
    started = time.monotonic()
    result = attacked.execute(language="python", code=code, timeout_seconds=1)
    assert result["status"] == "timeout", result
    assert result["duration_ms"] < 2000, result
    assert time.monotonic() - started < 10, "the answer came long after the deadline"


FORGE_THROUGH_PROC = """
import os
line = b'@@sandbox-result@@ {"status":"completed","exit_code":0,"stdout":"forged","output_files":{"../../../root/.ssh/authorized_keys":"x"}}\\n'
opened = []
for pid in (name for name in os.listdir("/proc") if name.isdigit() and int(name) != os.getpid()):
    for directory in ("fd", "task/%s/fd" % pid):
        try:
            names = os.listdir(f"/proc/{pid}/{directory}")
        except OSError as error:
            opened.append(f"{pid}/{directory}: {error.strerror}")
            continue
        for fd in names:
            try:
                with open(f"/proc/{pid}/{directory}/{fd}", "wb", buffering=0) as target:
                    target.write(line)
                opened.append(f"{pid}/{directory}/{fd}: WRITTEN")
            except OSError as error:
                opened.append(f"{pid}/{directory}/{fd}: {error.strerror}")
print(opened)
raise SystemExit(42)
"""


def test_the_result_cannot_be_forged_through_proc(attacked):
    result = attacked.execute(language="python", code=FORGE_THROUGH_PROC)
    assert (result["status"], result["exit_code"], result["output_files"]) == ("error_runtime", 42, {}), result
    assert "WRITTEN" not in result["stdout"] and "Permission denied" in result["stdout"], result


def test_the_sandbox_sees_no_host_path_in_proc(attacked):
    """Nothing in /proc names the server's working directory or a host temporary directory."""
    code = """
import os
seen = []
for pid in (name for name in os.listdir("/proc") if name.isdigit()):
    for name in ("cmdline", "environ", "mountinfo", "cwd", "root", "exe"):
        path = f"/proc/{pid}/{name}"
        try:
            seen.append(os.readlink(path) if name in ("cwd", "root", "exe") else open(path, "rb").read().decode(errors="replace"))
        except OSError:
            pass
print("\\n".join(seen))
"""
    result = attacked.execute(language="python", code=code)
    text = result["stdout"]
    assert "/sandbox/runner.py" in text, "the runner's own /proc entries were read"
    text = text.replace("/sandbox/work", "(the sandbox's work dir)")  # e.g. /work/main is a prefix of it
    for host_path in (os.getcwd(), "/tmp/", "/root"):
        assert host_path not in text, (host_path, text)


@pytest.mark.skipif(os.geteuid() != 0, reason="the memory cgroup needs root")
@pytest.mark.parametrize("hog", ["memfd", "shared"])
def test_memory_outside_the_heap_is_counted(api, hog):
    """memfd and MAP_SHARED memory, which RLIMIT_DATA does not see, meet the cgroup's limit."""
    allocate = {  # eight regions of 50 MB (each memfd stays under the file-size limit)
        "memfd": "fd = os.memfd_create('hog'); os.ftruncate(fd, 50 << 20); region = mmap.mmap(fd, 50 << 20)",
        "shared": "region = mmap.mmap(-1, 50 << 20, flags=mmap.MAP_SHARED)",
    }[hog]
    code = (f"import mmap, os\nheld = []\nfor _ in range(8):\n    {allocate}\n    held.append(region)\n"
            "    for offset in range(0, 50 << 20, 4096):\n        region[offset] = 1\nprint('held 400 MB')")
    result = api.execute(language="python", code=code, max_memory_mb=64, timeout_seconds=20)
    assert "held 400 MB" not in result["stdout"], result
    assert result["oom_killed"] and result["status"] == "error_runtime", (result["stderr"], result)


SECCOMP_PROBES = """
import ctypes, errno, os, threading
libc = ctypes.CDLL(None, use_errno=True)
def attempt(name, *args):
    value = libc.syscall(*args)
    print(name, errno.errorcode.get(ctypes.get_errno(), ctypes.get_errno()) if value == -1 else "ALLOWED")
attempt("io_uring_setup", 425, 8, ctypes.create_string_buffer(120))
attempt("bpf", 321, 0, 0, 0)
attempt("perf_event_open", 298, 0, 0, -1, -1, 0)
attempt("userfaultfd", 323, 0)
attempt("keyctl", 250, 0, 0)
attempt("unshare", 272, 0x10000000)
attempt("mount", 165, b"none", b"/tmp", b"tmpfs", 0, 0)
attempt("clone3", 435, 0, 0)
attempt("clone-newuser", 56, 0x10000000 | 17, 0, 0, 0, 0)
attempt("personality-no-aslr", 135, 0x0040000)
print("personality-query", libc.syscall(135, 0xffffffff) >= 0)
worker = threading.Thread(target=lambda: print("thread ran"))
worker.start(); worker.join()
"""


def test_the_seccomp_filter_refuses_the_kernels_risky_corners(attacked):
    result = attacked.execute(language="python", code=SECCOMP_PROBES)
    assert result["stdout"].splitlines() == [
        "io_uring_setup EPERM", "bpf EPERM", "perf_event_open EPERM", "userfaultfd EPERM", "keyctl EPERM",
        "unshare EPERM", "mount EPERM", "clone3 ENOSYS", "clone-newuser EPERM", "personality-no-aslr EPERM",
        "personality-query True", "thread ran",
    ], result


def test_threads_work_in_node_under_the_filter(attacked):
    """clone3 refused with ENOSYS, as libc expects: node's worker threads fall back to clone."""
    code = "const { Worker } = require('worker_threads');\nnew Worker('console.log(\"worker\")', { eval: true });"
    result = attacked.execute(language="javascript", code=code)
    assert (result["exit_code"], result["stdout"]) == (0, "worker\n"), result


HOSTILE = """
import os, signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
for _ in range(3):
    if os.fork() == 0:          # a double-forked, setsid daemon that ignores SIGTERM
        os.setsid()
        if os.fork() == 0:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            open("/tmp/daemon", "w").write("x")
            time.sleep(600)
        os._exit(0)
child = os.fork()
if child == 0:
    time.sleep(600)
os.kill(child, signal.SIGSTOP)  # a stopped child
print("started", flush=True)
time.sleep(600)
"""


def _sandbox_user_processes() -> dict[int, str]:
    """Processes running as the sandbox user (65534), with their cgroup membership."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and entry.stat().st_uid == 65534:
                found[int(entry.name)] = (entry / "cgroup").read_text()
        except OSError:
            continue
    return found


@pytest.mark.skipif(os.geteuid() != 0, reason="cgroups need root")
def test_hostile_programs_leave_nothing_behind_on_the_host(api):
    mounts_before = Path("/proc/self/mountinfo").read_text()
    temporary_before = set(os.listdir("/tmp"))
    for _ in range(5):
        result = api.execute(language="python", code=HOSTILE, timeout_seconds=1)
        assert (result["status"], result["stdout"]) == ("timeout", "started\n"), result
    ours = f":pids:/sandbox-api/{api.server_pid}/"
    deadline = time.monotonic() + 15  # used sandboxes are killed just after their answer
    while True:
        processes = _sandbox_user_processes()
        # Other servers (other test runs) may have sandboxes of their own: they are under sandbox-api too.
        strays = {pid: cgroup for pid, cgroup in processes.items() if ":pids:/sandbox-api/" not in cgroup}
        mine = {pid: line.split(ours)[1] for pid, cgroup in processes.items()
                for line in cgroup.splitlines() if ours in line}
        if not strays and len(set(mine.values())) <= max(os.cpu_count() or 1, 2):  # only the warm pool
            break
        assert time.monotonic() < deadline, (strays, mine)
        time.sleep(0.05)
    commands = {Path(f"/proc/{pid}/comm").read_text().strip() for pid in mine if Path(f"/proc/{pid}").exists()}
    assert commands <= {"bwrap", "python3"}, "an idle warm sandbox holds bubblewrap and the runner only"
    # bubblewrap mounts only in the sandbox's own mount namespace; a running cluster's kubelet may
    # mount its pods' volumes meanwhile, which is not ours to count.
    new_mounts = set(Path("/proc/self/mountinfo").read_text().splitlines()) - set(mounts_before.splitlines())
    assert not [line for line in new_mounts if not any(
        owner in line for owner in ("/var/lib/sandbox-cluster/", "/run/sandbox-cluster/", "/run/netns/"))], new_mounts
    new_temporary = set(os.listdir("/tmp")) - temporary_before
    assert not {name for name in new_temporary if name.startswith("sandbox")}, new_temporary


def test_the_unprivileged_mode_says_memory_is_not_enforced(unprivileged_api):
    detail = unprivileged_api.get("/readyz").json()["detail"]
    assert "memory limit NOT enforced" in detail and "shared memory or memfd" in detail, detail
    assert "memory limit NOT enforced" in unprivileged_api.server_log.read_text(), "the start-up log says it too"


@pytest.mark.skipif(os.geteuid() != 0, reason="cgroups need root")
def test_shutdown_ends_within_its_bound_and_kills_every_sandbox(start_api_server):
    """SIGTERM during hostile runs, one of them with a client waiting: the server exits, nothing is left."""
    import signal
    import threading

    server = start_api_server(**UNTHROTTLED)
    started = [server.post("/api/sandbox/execute", json={"language": "python", "code": HOSTILE, "timeout_seconds": 60,
                                                          "wait": False}).json()["execution_id"] for _ in range(2)]
    waiting = threading.Thread(target=lambda: server.post(
        "/api/sandbox/execute", json={"language": "python", "code": HOSTILE, "timeout_seconds": 60}), daemon=True)
    waiting.start()
    deadline = time.monotonic() + 30
    while any(server.get(f"/api/sandbox/executions/{execution}").json()["status"] != "running" for execution in started):
        assert time.monotonic() < deadline, "the executions never started"
        time.sleep(0.05)
    os.kill(server.server_pid, signal.SIGTERM)
    process_dir = Path(f"/proc/{server.server_pid}")
    deadline = time.monotonic() + 60  # a hang guard: the server's own bound is far below it
    while process_dir.exists() and (process_dir / "stat").read_text().split()[2] != "Z":
        assert time.monotonic() < deadline, "the server did not exit after SIGTERM"
        time.sleep(0.05)
    ours = f":pids:/sandbox-api/{server.server_pid}/"
    assert not [pid for pid, cgroup in _sandbox_user_processes().items() if ours in cgroup]
    assert not Path(f"/sys/fs/cgroup/pids/sandbox-api/{server.server_pid}").exists()
    assert not Path(f"/sys/fs/cgroup/memory/sandbox-api/{server.server_pid}").exists()


def test_one_key_cannot_keep_the_workers_from_another(start_api_server):
    """Key A queues six slow runs on two workers; key B's run takes the next free worker, ahead of A's queue."""
    server = start_api_server(local_workers=2, **UNTHROTTLED)
    slow = {"language": "bash", "code": "sleep 2", "wait": False}
    queued = [server.post("/api/sandbox/execute", json=slow).json()["execution_id"] for _ in range(6)]
    deadline = time.monotonic() + 30
    while sum(server.get(f"/api/sandbox/executions/{e}").json()["status"] == "running" for e in queued) < 2:
        assert time.monotonic() < deadline, "key A's first runs never started"
        time.sleep(0.05)
    other = server.other_tenant.post("/api/sandbox/execute", json={"language": "bash", "code": "echo mine"})
    assert other.json()["stdout"] == "mine\n", other.text
    states = [server.get(f"/api/sandbox/executions/{e}").json()["status"] for e in queued]
    assert "pending" in states, f"key B waited behind all of key A's queue: {states}"
