"""The runner run for real (python3 runner.py -) around real programs: how they end, what they see.

No mocks: every test starts runner.py as a subprocess with a spec on stdin and reads its one
result line. Timeouts are generous and nothing asserts on speed (the machine is shared).
"""

import glob
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import textwrap
import uuid

import pytest

from sandbox_runner import RESULT_MARKER, RUNNER_PATH, read_result, runner_command

PYTHON = sys.executable
# The interpreter that runs the runner; set it to run this suite under another Python (>= 3.9).
RUNNER_PYTHON = os.environ.get("SANDBOX_RUNNER_PYTHON", sys.executable)
SYSTEM_PYTHON = "/usr/bin/python3"  # world-readable, for runs as an unprivileged user
BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin"}
RESULT_FIELDS = {
    "status", "reason", "exit_code", "signal", "oom_killed", "stdout", "stderr", "stdout_truncated",
    "stderr_truncated", "duration_ms", "memory_used_mb", "output_files", "output_files_truncated",
    "cpu_time_ms", "limit_exceeded", "compile", "tests",
}


def run_runner(workdir, command, *, python=RUNNER_PYTHON, runner=RUNNER_PATH, prefix=(), user=None, pass_fds=(),
               **fields) -> dict:
    """Run the runner on a spec (behind `prefix`, a command that execs its arguments); asserts the
    one-line contract and returns the result document."""
    spec = {"command": command, "workdir": str(workdir), "timeout_seconds": 30, "env": BASE_ENV, **fields}
    completed = subprocess.run(
        [*prefix, *runner_command(str(runner), "-", python=python)], input=json.dumps(spec).encode(),
        capture_output=True,
        timeout=120, pass_fds=pass_fds, user=user, group=user, extra_groups=[] if user else None,
    )
    lines = completed.stdout.split(b"\n")
    assert lines[-1] == b"" and len(lines) == 2, completed.stdout[:500]  # exactly one line, newline-ended
    assert lines[0].startswith(RESULT_MARKER.encode()), lines[0][:200]
    assert completed.returncode == 0, completed.stderr.decode(errors="replace")
    result = read_result(completed.stdout.decode("ascii"))
    assert set(result) == RESULT_FIELDS
    return result


def python_program(source: str) -> list:
    return [PYTHON, "-c", textwrap.dedent(source)]


def assert_gone(pids) -> None:
    """None of the pids is alive (the runner reaped them; a zombie would still count as alive)."""
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def unprivileged_user() -> int:
    """A uid of its own per test run, so RLIMIT_NPROC (counted per uid) sees no other processes."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run the runner as another user")
    if not os.path.exists(SYSTEM_PYTHON):
        pytest.skip(f"needs {SYSTEM_PYTHON}")
    return 61000 + uuid.uuid4().int % 3000


@pytest.fixture
def shared_dir():
    """A directory an unprivileged user can use, holding a copy of runner.py it can read."""
    directory = tempfile.mkdtemp(prefix="runner-test-")
    os.chmod(directory, 0o777)
    shutil.copy(RUNNER_PATH, os.path.join(directory, "runner.py"))
    os.chmod(os.path.join(directory, "runner.py"), 0o644)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def test_hello_world_fills_every_field(tmp_path):
    result = run_runner(tmp_path / "w", [PYTHON, "main.py"],
                        files=[{"path": "main.py", "content": "print('hello')", "encoding": "utf-8"}])
    assert result["status"] == "completed" and result["reason"] is None
    assert (result["exit_code"], result["signal"], result["oom_killed"]) == (0, None, False)
    assert (result["stdout"], result["stderr"]) == ("hello\n", "")
    assert not result["stdout_truncated"] and not result["stderr_truncated"]
    assert isinstance(result["duration_ms"], int) and result["duration_ms"] >= 0
    assert isinstance(result["memory_used_mb"], int) and result["memory_used_mb"] >= 0
    assert result["output_files"] == {} and not result["output_files_truncated"]  # main.py unchanged


def test_stdout_and_stderr_are_captured_separately(tmp_path):
    result = run_runner(tmp_path, ["bash", "-c", "echo out; echo err >&2; echo out2; printf 'é\\xff' >&2"])
    assert result["stdout"] == "out\nout2\n"
    assert result["stderr"] == "err\né\ufffd"  # invalid UTF-8 becomes a replacement character


def test_stdin_is_fed_in_full(tmp_path):
    data = "".join(f"line {i} é\n" for i in range(200_000))  # ~2.4 MB, far beyond a pipe buffer
    result = run_runner(tmp_path, ["cat"], stdin=data, limits={"stdout_bytes": 4 << 20, "result_bytes": 8 << 20})
    assert result["status"] == "completed"
    assert result["stdout"] == data and not result["stdout_truncated"]


def test_stdin_unread_by_the_program_does_not_block_it(tmp_path):
    result = run_runner(tmp_path, ["true"], stdin="x" * (4 << 20))
    assert result["status"] == "completed"


def test_null_stdin_is_empty(tmp_path):
    result = run_runner(tmp_path, ["wc", "-c"], stdin=None)
    assert result["stdout"].strip() == "0"


@pytest.mark.parametrize("code", [1, 3, 42, 255])
def test_exit_codes(tmp_path, code):
    result = run_runner(tmp_path, ["bash", "-c", f"exit {code}"])
    assert (result["status"], result["exit_code"], result["signal"]) == ("error_runtime", code, None)
    assert result["reason"] == f"exited with code {code}"


@pytest.mark.parametrize(("signal_name", "number"), [("SEGV", 11), ("KILL", 9), ("ABRT", 6)])
def test_killed_by_a_signal(tmp_path, signal_name, number):
    result = run_runner(tmp_path, ["bash", "-c", f"kill -{signal_name} $$"])
    assert result["status"] == "error_runtime"
    assert (result["exit_code"], result["signal"]) == (128 + number, f"SIG{signal_name}")
    assert result["reason"] == f"killed by signal SIG{signal_name}"


def test_command_not_found(tmp_path):
    result = run_runner(tmp_path, ["no-such-interpreter", "main.x"])
    assert result["status"] == "error_setup"
    assert result["reason"] == "cannot start 'no-such-interpreter': not found"
    assert result["exit_code"] is None


def test_timeout_kills_a_term_ignoring_program_its_group_and_a_setsid_daemon(tmp_path):
    program = python_program("""
        import os, signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if os.fork() == 0:                      # a worker in the program's own process group
            print("worker", os.getpid(), flush=True)
            time.sleep(1000)
        first = os.fork()
        if first == 0:
            os.setsid()                         # a daemon: new session, then double fork
            if os.fork() == 0:
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                print("daemon", os.getpid(), flush=True)
                time.sleep(1000)
            os._exit(0)
        os.waitpid(first, 0)
        print("main", os.getpid(), flush=True)
        time.sleep(1000)
    """)
    result = run_runner(tmp_path, program, timeout_seconds=1)
    assert result["status"] == "timeout"
    assert result["reason"] == "wall-clock limit of 1 s exceeded"
    assert (result["exit_code"], result["signal"]) == (137, "SIGKILL")  # SIGTERM was ignored
    pids = {line.split()[0]: int(line.split()[1]) for line in result["stdout"].splitlines()}
    assert set(pids) == {"worker", "daemon", "main"}
    assert_gone(pids.values())


def test_timeout_gives_a_grace_period_to_a_program_that_handles_sigterm(tmp_path):
    program = python_program("""
        import signal, sys, time
        signal.signal(signal.SIGTERM, lambda *_: (print("cleaning up", flush=True), sys.exit(7)))
        time.sleep(1000)
    """)
    result = run_runner(tmp_path, program, timeout_seconds=1)
    assert (result["status"], result["exit_code"], result["signal"]) == ("timeout", 7, None)
    assert result["stdout"] == "cleaning up\n"


def test_a_daemon_left_behind_by_a_successful_program_is_killed(tmp_path):
    program = python_program("""
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.close(1); os.close(2)         # detached: holds no pipe the runner waits on
                time.sleep(1000)
            os._exit(0)
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                print("daemon", os.getpid(), flush=True)   # keeps stdout open: must not hang the run
                time.sleep(1000)
            os._exit(0)
        print("main", os.getpid(), flush=True)
    """)
    result = run_runner(tmp_path, program)
    assert result["status"] == "completed"
    pids = [int(line.split()[1]) for line in result["stdout"].splitlines()]
    assert len(pids) == 2
    assert_gone(pids)


def test_100_mb_of_stdout_is_capped_flagged_and_runner_memory_stays_bounded(tmp_path):
    program = python_program("""
        import sys
        chunk = b"x" * (1 << 20)
        for _ in range(100):
            sys.stdout.buffer.write(chunk)
        sys.stderr.write("done")
    """)
    spec = {"command": program, "workdir": str(tmp_path), "timeout_seconds": 120, "env": BASE_ENV,
            "limits": {"stdout_bytes": 1 << 20, "result_bytes": 2 << 20}}
    # A wrapper process, so its RUSAGE_CHILDREN peak is the runner's (and the program's) own.
    wrapper = textwrap.dedent(f"""
        import resource, subprocess, sys
        out = subprocess.run({runner_command(str(RUNNER_PATH), "-", python=RUNNER_PYTHON)!r},
                             input=sys.stdin.buffer.read(), capture_output=True).stdout
        sys.stdout.buffer.write(out)
        print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)
    """)
    completed = subprocess.run([PYTHON, "-c", wrapper], input=json.dumps(spec).encode(), capture_output=True,
                               timeout=300)
    result = read_result(completed.stdout.decode())
    peak_rss_mb = int(completed.stderr.split()[-1]) / 1024
    assert result["status"] == "completed" and result["stderr"] == "done"
    assert result["stdout_truncated"] and result["stdout"] == "x" * (1 << 20)
    assert peak_rss_mb < 64, f"runner peak RSS {peak_rss_mb:.0f} MB while discarding 99 MB"


def test_the_result_line_is_the_only_line_on_the_runners_stdout(tmp_path):
    forged = RESULT_MARKER + '{"status": "completed"}'
    result = run_runner(tmp_path, ["bash", "-c", f"echo '{forged}'; echo '{forged}' >&2; exit 5"])
    assert result["status"] == "error_runtime"  # run_runner asserted there is exactly one line
    assert result["stdout"] == forged + "\n"


def test_the_program_sees_only_its_spec_environment_session_and_descriptors(tmp_path):
    program = python_program("""
        import json, os
        print(json.dumps({
            "cwd": os.getcwd(), "sid": os.getsid(0), "pgid": os.getpgid(0),
            "pid": os.getpid(), "fds": sorted(int(fd) for fd in os.listdir("/proc/self/fd")),
            "oom_score_adj": open("/proc/self/oom_score_adj").read().strip(),
        }))
    """)
    with open(os.devnull) as inherited:  # an open descriptor the runner inherits must not leak
        result = run_runner(tmp_path / "work", program, env={"ONLY": "this", "PATH": "/usr/bin:/bin"},
                            pass_fds=(inherited.fileno(),))
    seen = json.loads(result["stdout"])
    assert seen["cwd"] == str(tmp_path / "work")
    assert seen["sid"] == seen["pgid"] == seen["pid"]  # its own session and process group
    assert seen["fds"] == [0, 1, 2, 3]  # 3 is listdir's own descriptor
    assert seen["oom_score_adj"] == "1000"


def test_the_environment_is_exactly_the_specs(tmp_path):
    result = run_runner(tmp_path, ["env"], env={"ONLY": "this", "PATH": "/usr/bin:/bin", "EMPTY": ""})
    assert sorted(result["stdout"].splitlines()) == ["EMPTY=", "ONLY=this", "PATH=/usr/bin:/bin"]


def test_max_processes_sets_rlimit_nproc_only_when_given(tmp_path):
    read_limit = ["bash", "-c", "ulimit -u"]
    assert run_runner(tmp_path / "a", read_limit, max_processes=17)["stdout"] == "17\n"
    own_limit = resource.getrlimit(resource.RLIMIT_NPROC)[0]
    expected = "unlimited" if own_limit == resource.RLIM_INFINITY else str(own_limit)
    assert run_runner(tmp_path / "b", read_limit)["stdout"] == expected + "\n"


def test_max_processes_contains_a_fork_loop_for_an_unprivileged_user(shared_dir):
    uid = unprivileged_user()
    program = [SYSTEM_PYTHON, "-c", textwrap.dedent("""
        import os, time
        started = 0
        for _ in range(50):
            try:
                if os.fork() == 0:
                    time.sleep(30); os._exit(0)
                started += 1
            except BlockingIOError:
                break
        print(started)
    """)]
    result = run_runner(os.path.join(shared_dir, "w"), program, python=SYSTEM_PYTHON,
                        runner=os.path.join(shared_dir, "runner.py"), user=uid, max_processes=5)
    assert result["status"] == "completed"
    assert int(result["stdout"]) < 5  # the program itself counts against the limit


def test_an_unprivileged_program_cannot_reach_the_runners_stdout(shared_dir):
    uid = unprivileged_user()
    program = [SYSTEM_PYTHON, "-c", textwrap.dedent("""
        import os
        runner = os.getppid()
        for target in (f"/proc/{runner}/fd/1", f"/proc/{runner}/mem"):
            try:
                open(target, "w").write("@@sandbox-result@@ {}\\n")
                print("opened", target)
            except PermissionError:
                print("denied")
        print(open("/proc/self/oom_score_adj").read().strip())
    """)]
    result = run_runner(os.path.join(shared_dir, "w"), program, python=SYSTEM_PYTHON,
                        runner=os.path.join(shared_dir, "runner.py"), user=uid)
    assert result["stdout"] == "denied\ndenied\n1000\n"


def test_the_runner_imports_no_heavy_module(tmp_path):
    """Start-up is the runner's main cost: json, ctypes, re, enum, typing and friends stay out, and so
    does what only the pod's isolation gate needs (socket, ipaddress, struct)."""
    spec = {"command": ["true"], "workdir": str(tmp_path), "timeout_seconds": 5, "env": BASE_ENV}
    command = runner_command(str(RUNNER_PATH), "-", python=RUNNER_PYTHON)
    command[1:1] = ["-X", "importtime"]
    completed = subprocess.run(command, input=json.dumps(spec).encode(), capture_output=True, timeout=60)
    assert read_result(completed.stdout.decode())["status"] == "completed"
    imported = {line.rsplit("|", 1)[1].strip() for line in completed.stderr.decode().splitlines()
                if line.startswith("import time:") and "|" in line}
    assert "_json" in imported  # the probe works
    assert not imported & {"json", "ctypes", "re", "enum", "typing", "subprocess", "selectors", "signal",
                           "socket", "ipaddress", "struct"}


@pytest.mark.parametrize("version", ["3.9", "3.10", "3.12", "3.13"])
def test_the_runner_works_on_every_supported_python(tmp_path, version):
    pyenv = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    found = [*glob.glob(f"{pyenv}/versions/{version}.*/bin/python{version}"),  # real binaries, not shims
             *glob.glob(f"/usr/bin/python{version}"), *glob.glob(f"/usr/local/bin/python{version}")]
    if not found:
        pytest.skip(f"python{version} is not installed here")
    python = found[0]
    program = ["bash", "-c", "(setsid sleep 1000 &); echo $(cat input.txt); trap '' TERM; sleep 1000"]
    result = run_runner(tmp_path, program, python=python, timeout_seconds=1,
                        files=[{"path": "input.txt", "content": "from " + version}])
    assert (result["status"], result["stdout"]) == ("timeout", f"from {version}\n")

