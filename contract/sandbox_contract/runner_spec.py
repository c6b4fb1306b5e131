"""The runner's spec document (docs/runner-protocol.md) for a resolved request: both backends build
it here, so a request means the same thing wherever it runs.
"""

from __future__ import annotations

import posixpath
from dataclasses import asdict

from sandbox_contract.request import ExecutionRequest, InputFile, InvalidSpecError

# Where the program runs inside the sandbox (bubblewrap mount point, or the pod's emptyDir).
DEFAULT_WORKDIR = "/sandbox/work"
# What the program can write besides the work directory, emptied between test cases.
SCRATCH_PATHS = ("/tmp", "/dev/shm")


def sandbox_environment(workdir: str) -> dict[str, str]:
    """The program's whole environment: nothing is inherited from the host or the pod."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": workdir,
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
    }


def build_runner_spec(
    request: ExecutionRequest, *, workdir: str = DEFAULT_WORKDIR, max_processes: int | None = None,
    scratch_paths: tuple[str, ...] = SCRATCH_PATHS,
) -> dict:
    """The runner's spec for `request`; the code becomes the language's main file. The output caps
    are the runner's own (sandbox_runner.OUTPUT_LIMITS), so the spec does not repeat them.

    `max_processes` is for the rlimit fallback only: pass None when a cgroup or the kubelet limits
    the process count. With test cases the spec holds their inputs only, never the expected outputs.
    """
    if not posixpath.isabs(workdir):
        raise InvalidSpecError(f"workdir must be absolute, got {workdir!r}")
    language, limits = request.language, request.limits
    main = InputFile(path=language.main_file, content=request.code, encoding="utf-8")
    main_path = posixpath.join(workdir, language.main_file)
    spec = {
        "command": [*language.run_argv(main_path, limits.max_memory_mb), *request.args],
        "workdir": workdir,
        "files": [asdict(file) for file in (main, *request.files)],
        "stdin": request.stdin,
        "timeout_seconds": limits.timeout_seconds,
        "cpu_time_seconds": limits.cpu_time_seconds,
        "max_memory_mb": limits.max_memory_mb,
        "max_file_size_mb": limits.max_file_size_mb,
        "max_processes": max_processes,
        # The request's variables cannot name the sandbox's own (request.RESERVED_ENV_NAMES) nor the
        # runtime's (the catalogue's env).
        "env": {**dict(request.env), **language.environment(main_path, limits.max_memory_mb),
                **sandbox_environment(workdir)},
    }
    if request.tests:
        spec["tests"] = [{"stdin": case.input} for case in request.tests]
        spec["deadline_seconds"] = limits.deadline_seconds
        spec["scratch_paths"] = list(scratch_paths)
    if language.compiled:
        spec["compile"] = {"command": language.compile_argv(main_path, limits.max_memory_mb),
                           "timeout_seconds": limits.compile_timeout_seconds}
    return spec
