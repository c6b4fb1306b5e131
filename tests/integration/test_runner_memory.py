"""Peak memory and out-of-memory classification, in a real cgroup v1 memory cgroup per test.

Each test makes a fresh cgroup under /sys/fs/cgroup/memory with a hard limit, starts the runner
inside it (as a pod's container or the local backend would), and removes the cgroup afterwards.
"""

import os
import time
import uuid

import pytest

from tests.integration.test_runner_process import python_program, run_runner

MEMORY_ROOT = "/sys/fs/cgroup/memory"


@pytest.fixture
def memory_cgroup():
    """A function that makes a fresh memory cgroup limited to N MB and returns its path."""
    if os.geteuid() != 0 or not os.path.exists(f"{MEMORY_ROOT}/memory.limit_in_bytes"):
        pytest.skip("needs root and a cgroup v1 memory hierarchy at " + MEMORY_ROOT)
    made = []

    def make(limit_mb: int) -> str:
        path = f"{MEMORY_ROOT}/runner-test-{uuid.uuid4().hex[:12]}"
        os.mkdir(path)
        made.append(path)
        for control in ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes"):  # memsw: no swapping out
            if os.path.exists(f"{path}/{control}"):
                with open(f"{path}/{control}", "w") as limit:
                    limit.write(str(limit_mb << 20))
        return path

    yield make
    for path in made:
        for _ in range(50):  # the last processes may still be leaving the cgroup
            try:
                os.rmdir(path)
                break
            except OSError:
                time.sleep(0.1)


def run_in_cgroup(cgroup: str, workdir, command, **fields) -> dict:
    """The runner started inside `cgroup` (a shell joins it, then execs the runner)."""
    join = f'echo $$ > {cgroup}/cgroup.procs && exec "$@"'
    return run_runner(workdir, command, prefix=("sh", "-c", join, "sh"), **fields)


def test_a_memory_hog_is_oom_killed_and_reported(memory_cgroup, tmp_path):
    program = python_program("block = bytearray(512 << 20); print('survived')")
    result = run_in_cgroup(memory_cgroup(96), tmp_path, program, max_memory_mb=96)
    assert result["status"] == "error_runtime"
    assert result["oom_killed"] is True
    assert result["reason"] == "out of memory: exceeded 96 MB"
    assert (result["exit_code"], result["signal"]) == (137, "SIGKILL")
    assert result["stdout"] == ""


def test_an_oom_killed_child_is_reported_even_when_the_parent_survives(memory_cgroup, tmp_path):
    program = python_program("""
        import os, sys
        child = os.fork()
        if child == 0:
            block = bytearray(512 << 20)
            os._exit(0)
        _, status = os.waitpid(child, 0)
        print("child killed by", os.WTERMSIG(status) if os.WIFSIGNALED(status) else None)
        sys.exit(1)
    """)
    result = run_in_cgroup(memory_cgroup(96), tmp_path, program, max_memory_mb=96)
    assert result["stdout"] == "child killed by 9\n"
    assert result["oom_killed"] is True
    assert (result["status"], result["reason"]) == ("error_runtime", "out of memory: exceeded 96 MB")


def test_peak_memory_of_the_program_is_measured(memory_cgroup, tmp_path):
    program = python_program("block = bytearray(100 << 20); print(len(block))")
    result = run_in_cgroup(memory_cgroup(512), tmp_path, program, max_memory_mb=512)
    assert result["status"] == "completed" and result["oom_killed"] is False
    assert 100 <= result["memory_used_mb"] < 200  # the runner's own footprint is not counted
