"""What the local backend's sandbox enforces, proven with real processes under bubblewrap."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest

from tests.integration.conftest import UNTHROTTLED


def processes_mentioning(marker: str) -> list[str]:
    """Host processes whose command line contains `marker` (ours and anything that escaped)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmdline:
                found.append(f"{entry.name}: {cmdline}")
    return found


def test_timeout_kills_a_sigterm_ignoring_program_and_its_setsid_daemon(api):
    marker = f"daemon-{uuid.uuid4().hex}"
    code = f"""
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
subprocess.Popen([sys.executable, "-c", "import time, signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)  # {marker}"],
                 start_new_session=True)
print("daemon started", flush=True)
time.sleep(600)
"""
    result = api.execute(language="python", code=code, timeout_seconds=2)
    assert result["status"] == "timeout", result
    assert result["stdout"] == "daemon started\n"
    assert processes_mentioning(marker) == []


def test_fork_bomb_is_contained_and_the_server_stays_healthy(api):
    result = api.execute(language="bash", code=":(){ :|:& };:; sleep 3", timeout_seconds=5)
    assert result["status"] != "error_setup", result
    assert api.get("/healthz").status_code == 200
    assert api.execute(language="bash", code="echo after")["stdout"] == "after\n"


def test_forking_stops_at_the_process_limit_and_nothing_survives(api):
    marker = f"forked-{uuid.uuid4().hex}"
    code = f"""
import os, time
forked = 0
while True:
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        os.execv("/usr/bin/sleep", ["{marker}", "600"])
    forked += 1
print("forked", forked, flush=True)
time.sleep(600)
"""
    result = api.execute(language="python", code=code, timeout_seconds=3)
    assert result["status"] == "timeout", result
    assert 0 < int(result["stdout"].split()[1]) < 200
    assert processes_mentioning(marker) == []


def test_memory_hog_ends_as_error_runtime_out_of_memory(api):
    code = "blocks = []\nwhile True:\n    blocks.append(bytearray(16 * 1024 * 1024))\n"
    result = api.execute(language="python", code=code, max_memory_mb=64, timeout_seconds=20)
    assert result["status"] == "error_runtime", result
    assert result["oom_killed"] is True
    assert "out of memory" in result["reason"]
    assert api.execute(language="bash", code="echo alive")["stdout"] == "alive\n"


def test_planted_links_are_neither_followed_nor_returned(api):
    code = """
import os
os.symlink("/etc/passwd", "passwd-link")
os.symlink("/proc/1/root/etc", "root-link")
os.symlink("/sandbox/runner.py", "runner-link")
open("real.txt", "w").write("ok")
"""
    result = api.execute(language="python", code=code)
    assert result["status"] == "completed", result
    assert result["output_files"] == {"real.txt": "ok"}


def test_no_network_not_even_the_hosts_loopback(api):
    port = int(str(api.base_url).rsplit(":", 1)[1])
    code = f"""
import socket
for host, port in [("127.0.0.1", {port}), ("1.1.1.1", 53), ("10.0.0.1", 443)]:
    try:
        socket.create_connection((host, port), timeout=2).close()
        print(host, "reachable")
    except OSError as error:
        print(host, "unreachable")
print(sorted(open("/proc/net/dev").read().split()[::17][1:]))
"""
    result = api.execute(language="python", code=code, timeout_seconds=20)
    lines = result["stdout"].splitlines()
    assert lines[:3] == ["127.0.0.1 unreachable", "1.1.1.1 unreachable", "10.0.0.1 unreachable"], result


def test_unprivileged_read_only_system_no_host_paths_clean_environment(api):
    code = """
import os
print(os.getuid(), os.getgid(), os.getgroups())
print([line.split()[1] for line in open("/proc/self/status") if line.startswith("CapEff")][0])
for path in ("/usr/lib/probe", "/probe", "/etc/probe", "/dev/probe"):
    try:
        open(path, "w")
        print(path, "writable")
    except OSError:
        print(path, "read-only")
print([path for path in ("/root", "/home", "/work", "/var", "/sys/fs/cgroup", "/run") if os.path.exists(path)])
print(sorted(os.environ))
import resource
print(resource.getrlimit(resource.RLIMIT_CORE))
"""
    result = api.execute(language="python", code=code)
    uid, caps, usr, root, etc, dev, host_paths, environment, core = result["stdout"].splitlines()
    assert uid == "65534 65534 []"
    assert caps == "0000000000000000"
    assert [usr, root, etc, dev] == ["/usr/lib/probe read-only", "/probe read-only", "/etc/probe read-only", "/dev/probe read-only"]
    assert host_paths == "[]"
    assert environment == str(sorted(["HOME", "LANG", "LC_ALL", "PATH", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "TMPDIR"]))
    assert core == "(0, 0)", "no core dumps"


def test_work_dir_and_tmp_are_size_capped(api):
    """Files of 40 MB each (under the 64 MiB file-size limit) until the file system is full."""
    code = """
for directory in ("/tmp", ".", "/dev/shm"):
    try:
        for number in range(5):
            with open(f"{directory}/big{number}", "wb") as out:
                for _ in range(40):
                    out.write(b"x" * 1048576)
        print(directory, "wrote 200 MB")
    except OSError as error:
        print(directory, "full:", error.strerror)
"""
    result = api.execute(language="python", code=code, max_memory_mb=512, timeout_seconds=30)
    assert result["stdout"].splitlines() == [f"{path} full: No space left on device" for path in ("/tmp", ".", "/dev/shm")], result


def test_no_file_grows_past_the_file_size_limit(api):
    """RLIMIT_FSIZE: the write past 64 MiB fails (EFBIG), and without a handler SIGXFSZ ends the program."""
    code = """
import signal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
try:
    with open("/tmp/big", "wb") as out:
        for _ in range(100):
            out.write(b"x" * 1048576)
except OSError as error:
    print(error.strerror)
import os
print(os.path.getsize("/tmp/big"))
signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
with open("/tmp/big", "ab") as out:
    out.write(b"x")
"""
    result = api.execute(language="python", code=code, max_memory_mb=512, timeout_seconds=30)
    assert result["stdout"].splitlines() == ["File too large", str(64 << 20)], result
    assert result["signal"] == "SIGXFSZ", result


@pytest.mark.skipif(os.geteuid() != 0, reason="cgroups need root")
def test_each_sandbox_runs_once_and_leaves_no_cgroup_behind(api):
    """Only the warm pool (at most one idle sandbox per worker) remains between executions."""
    pids_dir = Path(f"/sys/fs/cgroup/pids/sandbox-api/{api.server_pid}")
    results = [api.execute(language="bash", code="echo $$ > /tmp/pid; sleep 0.1; echo ran") for _ in range(6)]
    assert all(result["stdout"] == "ran\n" for result in results)
    deadline = time.monotonic() + 10  # used sandboxes are removed just after their answer
    while len(idle := [path for path in pids_dir.iterdir() if path.is_dir()]) > max(os.cpu_count() or 1, 2):
        assert time.monotonic() < deadline, f"{len(idle)} sandbox cgroups left"
        time.sleep(0.05)
    for sandbox in idle:  # an idle sandbox holds bubblewrap and the runner, never a program
        commands = [Path(f"/proc/{pid}/comm").read_text().strip()
                    for pid in (sandbox / "cgroup.procs").read_text().split() if Path(f"/proc/{pid}").exists()]
        assert set(commands) <= {"bwrap", "python3"}, commands


@pytest.mark.skipif(os.geteuid() != 0, reason="cgroup enforcement needs root")
def test_readiness_reports_what_is_enforced(api):
    assert "cgroup v1 memory and pids" in api.get("/readyz").json()["detail"]


SUM_OR_LOOP = "a, b = map(int, input().split())\nwhile a == 7:\n    pass\nprint(a + b)\n"



def test_tests_past_the_execution_deadline_are_skipped(start_api_server):
    client = start_api_server(**UNTHROTTLED, max_deadline_seconds=3)
    tests = [{"input": "7 0", "expected_output": "7"}] * 3 + [{"input": "1 1", "expected_output": "2"}]
    response = client.post("/api/sandbox/execute", json={"language": "python", "code": SUM_OR_LOOP, "tests": tests,
                                                         "timeout_seconds": 2})
    result = response.json()
    assert result["limits"]["deadline_seconds"] == 3, result
    verdicts = [test["verdict"] for test in result["tests"]]
    assert verdicts[:2] == ["timeout", "timeout"] and verdicts[2:] == ["skipped", "skipped"], result
    assert result["status"] == "timeout" and result["reason"] == "the execution's deadline passed: 2 of 4 tests skipped"
    assert result["tests"][1]["reason"] == "the execution's deadline passed during this test"
