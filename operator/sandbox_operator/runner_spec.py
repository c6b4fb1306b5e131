"""The shared execution contract: limits, input-file validation and the runner's spec document.

Both backends (the local bubblewrap one and the Kubernetes operator) build the runner's spec here, so
a request means the same thing wherever it runs. Standard library and the catalogue only: no HTTP,
no pydantic, so the operator can use it straight from a SandboxExecution's spec.
"""

from __future__ import annotations

import base64
import binascii
import posixpath
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from sandbox_operator.catalogue import Language
from sandbox_runner import CONTROL_CHARACTERS

# Where the program runs inside the sandbox (bubblewrap mount point, or the pod's emptyDir).
DEFAULT_WORKDIR = "/sandbox/work"

ENCODINGS = ("utf-8", "base64")
MAX_PATH_CHARS = 255
# A path component is at most this many bytes on every Linux filesystem (NAME_MAX).
MAX_COMPONENT_BYTES = 255
MAX_PATH_DEPTH = 8
MAX_INPUT_FILES = 32


class InvalidSpecError(ValueError):
    """The request cannot become a runner spec; the message says what to change."""


@dataclass(frozen=True)
class OutputLimits:
    """Output caps; the runner truncates beyond them and flags it."""

    stdout_bytes: int = 512 * 1024
    stderr_bytes: int = 128 * 1024
    output_files: int = 32
    output_file_bytes: int = 256 * 1024
    output_files_bytes: int = 512 * 1024
    # stdout + stderr + files (base64 grows by 4/3) stay under this, so a result always fits in one
    # Kubernetes object next to its spec (etcd refuses requests over ~1.5 MiB).
    result_bytes: int = 1024 * 1024

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class ExecutionLimits:
    """Defaults and maxima for what a request may ask for."""

    default_timeout_seconds: int = 10
    max_timeout_seconds: int = 60
    default_memory_mb: int = 256
    min_memory_mb: int = 16
    max_memory_mb: int = 1024
    # Processes and threads per execution: enough for node's thread pool, too few for a fork bomb.
    max_processes: int = 128
    output: OutputLimits = field(default_factory=OutputLimits)

    def resolve(self, timeout_seconds: int | None, max_memory_mb: int | None) -> tuple[int, int]:
        """The effective (timeout, memory) for a request; raises InvalidSpecError out of bounds."""
        timeout = self.default_timeout_seconds if timeout_seconds is None else timeout_seconds
        memory = self.default_memory_mb if max_memory_mb is None else max_memory_mb
        if not 1 <= timeout <= self.max_timeout_seconds:
            raise InvalidSpecError(
                f"timeout_seconds must be between 1 and {self.max_timeout_seconds}, got {timeout}"
            )
        if not self.min_memory_mb <= memory <= self.max_memory_mb:
            raise InvalidSpecError(
                f"max_memory_mb must be between {self.min_memory_mb} and {self.max_memory_mb}, got {memory}"
            )
        return timeout, memory


@dataclass(frozen=True)
class InputFile:
    """A file to materialise in the work directory; `content` is text or base64 per `encoding`."""

    path: str
    content: str
    encoding: str = "utf-8"


def validate_file_path(path: str) -> str:
    """The normalised relative path, or InvalidSpecError saying why the name is refused."""
    if not isinstance(path, str) or not path:
        raise InvalidSpecError("file names must be non-empty strings")
    shown = repr(path[:80])
    if len(path) > MAX_PATH_CHARS:
        raise InvalidSpecError(f"file name {shown}... is longer than {MAX_PATH_CHARS} characters")
    if path.translate(CONTROL_CHARACTERS) != path or "\\" in path:  # a backslash: a separator elsewhere
        raise InvalidSpecError(f"file name {shown} contains a control character or a backslash")
    if path.startswith("/"):
        raise InvalidSpecError(f"file name {shown} must be relative, not absolute")
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise InvalidSpecError(f"file name {shown} must not contain '..'")
    if not parts:
        raise InvalidSpecError(f"file name {shown} does not name a file")
    if len(parts) > MAX_PATH_DEPTH:
        raise InvalidSpecError(f"file name {shown} is nested deeper than {MAX_PATH_DEPTH} directories")
    for part in parts:
        if len(part.encode("utf-8", errors="surrogatepass")) > MAX_COMPONENT_BYTES:
            raise InvalidSpecError(
                f"file name {shown} has a component longer than {MAX_COMPONENT_BYTES} bytes (UTF-8)"
            )
    return posixpath.join(*parts)


def file_bytes(file: InputFile) -> bytes:
    """The file's bytes; raises InvalidSpecError for an unknown encoding or bad base64."""
    if file.encoding == "utf-8":
        return file.content.encode("utf-8", errors="surrogatepass")
    if file.encoding == "base64":
        try:
            return base64.b64decode(file.content, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidSpecError(f"file {file.path!r}: content is not valid base64") from None
    raise InvalidSpecError(f"file {file.path!r}: encoding must be one of {', '.join(ENCODINGS)}")


def normalise_input_files(files: Iterable[InputFile], *, main_file: str) -> list[InputFile]:
    """Validated files with normalised paths; refuses duplicates and clashes with the code file."""
    normalised: dict[str, InputFile] = {}
    for file in files:
        path = validate_file_path(file.path)
        file_bytes(file)  # refuse bad base64 / encodings now, not inside the sandbox
        if path == main_file:
            raise InvalidSpecError(f"file {path!r} clashes with the code file of the same name")
        if path in normalised:
            raise InvalidSpecError(f"file {path!r} is given twice")
        normalised[path] = InputFile(path=path, content=file.content, encoding=file.encoding)
    if len(normalised) > MAX_INPUT_FILES:
        raise InvalidSpecError(f"at most {MAX_INPUT_FILES} input files are allowed, got {len(normalised)}")
    paths = {*normalised, main_file}
    for path in sorted(paths):
        parent = posixpath.dirname(path)
        while parent:
            if parent in paths:
                what = "the code file" if parent == main_file else "file"
                raise InvalidSpecError(f"{what} {parent!r} cannot also be a directory (for {path!r})")
            parent = posixpath.dirname(parent)
    return list(normalised.values())


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
    *,
    language: Language,
    code: str,
    stdin: str | None,
    files: Iterable[InputFile],
    timeout_seconds: int,
    max_memory_mb: int | None,
    workdir: str = DEFAULT_WORKDIR,
    max_processes: int | None = None,
    output_limits: OutputLimits = OutputLimits(),
) -> dict:
    """The runner's spec document (docs/runner-protocol.md); the code becomes `language.main_file`.

    `max_processes` is for the rlimit fallback only: pass None when a cgroup or the kubelet limits
    the process count.
    """
    if not posixpath.isabs(workdir):
        raise InvalidSpecError(f"workdir must be absolute, got {workdir!r}")
    inputs = normalise_input_files(files, main_file=language.main_file)
    main = InputFile(path=language.main_file, content=code, encoding="utf-8")
    return {
        "command": language.argv(posixpath.join(workdir, language.main_file)),
        "workdir": workdir,
        "files": [asdict(file) for file in (main, *inputs)],
        "stdin": stdin,
        "timeout_seconds": timeout_seconds,
        "max_memory_mb": max_memory_mb,
        "max_processes": max_processes,
        "env": sandbox_environment(workdir),
        "limits": output_limits.as_dict(),
    }
