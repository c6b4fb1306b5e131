"""What a request means: its limits resolved against the configured defaults and maxima, its input
files checked and normalised, its language found in the catalogue. One function, `resolve_request`,
does all of it for the HTTP API and for the operator (a SandboxExecution someone applied by hand).
"""

from __future__ import annotations

import base64
import binascii
import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

from sandbox_contract.catalogue import Catalogue, Language
from sandbox_contract.settings import SettingError, check, setting, variable
from sandbox_runner import CONTROL_CHARACTERS

ENCODINGS = ("utf-8", "base64")
MAX_PATH_CHARS = 255
# A path component is at most this many bytes on every Linux filesystem (NAME_MAX).
MAX_COMPONENT_BYTES = 255
MAX_PATH_DEPTH = 8
MAX_INPUT_FILES = 32
MAX_ARGS = 64
MAX_ARG_CHARS = 4096
MAX_ENV_VARIABLES = 32
MAX_ENV_NAME_CHARS = 128
MAX_ENV_VALUE_CHARS = 4096
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
# What a request may not set: the variables every program gets (runner_spec.sandbox_environment, a
# unit test keeps them in here), and the dynamic loader's and the locale's families.
RESERVED_ENV_NAMES = frozenset({"PATH", "HOME", "TMPDIR", "LANG", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"})
RESERVED_ENV_PREFIXES = ("LD_", "LC_")


class InvalidSpecError(ValueError):
    """The request cannot become an execution; the message says what to change."""


@dataclass(frozen=True)
class EffectiveLimits:
    """The limits one execution runs under, as resolved; reported back in its result."""

    timeout_seconds: int
    max_memory_mb: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class ExecutionLimits:
    """Defaults and maxima for what a request may ask for; the API and the operator read them from the
    same SANDBOX_* variables."""

    min_timeout_seconds: int = 1
    default_timeout_seconds: int = setting(10, "timeout when a request gives none", minimum=1)
    max_timeout_seconds: int = setting(60, "largest timeout a request may ask for", minimum=1)
    default_memory_mb: int = setting(256, "memory limit when a request gives none", minimum=1)
    min_memory_mb: int = 16
    max_memory_mb: int = setting(1024, "largest memory limit a request may ask for", minimum=1)
    # Enough for node's thread pool, too few for a fork bomb.
    max_processes: int = setting(128, "processes and threads per execution", minimum=1)

    def __post_init__(self) -> None:
        check(self)
        for default, low, high in (
            ("default_timeout_seconds", self.min_timeout_seconds, "max_timeout_seconds"),
            ("default_memory_mb", self.min_memory_mb, "max_memory_mb"),
        ):
            value, maximum = getattr(self, default), getattr(self, high)
            if not low <= value <= maximum:
                raise SettingError(f"{variable(type(self), default)} ({value}) must lie between {low} "
                                   f"and {variable(type(self), high)} ({maximum})")

    def resolve(self, timeout_seconds: int | None, max_memory_mb: int | None) -> EffectiveLimits:
        """The effective limits for a request; raises InvalidSpecError out of bounds."""
        timeout = self.default_timeout_seconds if timeout_seconds is None else timeout_seconds
        memory = self.default_memory_mb if max_memory_mb is None else max_memory_mb
        if not self.min_timeout_seconds <= timeout <= self.max_timeout_seconds:
            raise InvalidSpecError(
                f"timeout_seconds must be between {self.min_timeout_seconds} and {self.max_timeout_seconds}, got {timeout}"
            )
        if not self.min_memory_mb <= memory <= self.max_memory_mb:
            raise InvalidSpecError(
                f"max_memory_mb must be between {self.min_memory_mb} and {self.max_memory_mb}, got {memory}"
            )
        return EffectiveLimits(timeout_seconds=timeout, max_memory_mb=memory)


@dataclass(frozen=True)
class InputFile:
    """A file to materialise in the work directory; `content` is text or base64 per `encoding`."""

    path: str
    content: str
    encoding: str = "utf-8"


@dataclass(frozen=True)
class ExecutionRequest:
    """A request that can run: the language found, the files normalised, the limits resolved."""

    language: Language
    code: str
    stdin: str | None
    files: tuple[InputFile, ...]
    limits: EffectiveLimits
    # Command-line arguments after the code file, and variables added to the program's environment.
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()


def resolve_request(
    *,
    catalogue: Catalogue,
    limits: ExecutionLimits,
    language: str,
    code: str,
    stdin: str | None,
    files: Iterable[InputFile],
    timeout_seconds: int | None,
    max_memory_mb: int | None,
    args: Iterable[str] = (),
    env: Mapping[str, str] | None = None,
    offered: Iterable[str] | None = None,
) -> ExecutionRequest:
    """The request as it will run; InvalidSpecError says what to change.

    `offered` narrows the catalogue to the languages a backend can run (the local one offers those
    installed on its host).
    """
    found = catalogue.find(language)
    names = sorted(catalogue.languages if offered is None else offered)
    if found is None or found.name not in names:
        raise InvalidSpecError(f"Unsupported language: {language!r} (supported: {', '.join(names)})")
    effective = limits.resolve(timeout_seconds, max_memory_mb)
    normalised = normalise_input_files(files, main_file=found.main_file)
    return ExecutionRequest(language=found, code=code, stdin=stdin, files=tuple(normalised), limits=effective,
                            args=validate_args(args), env=validate_env(env or {}))


def validate_args(args: Iterable[str]) -> tuple[str, ...]:
    """The arguments, or InvalidSpecError saying which one is refused."""
    args = tuple(args)
    if len(args) > MAX_ARGS:
        raise InvalidSpecError(f"at most {MAX_ARGS} args are allowed, got {len(args)}")
    for index, arg in enumerate(args):
        if not isinstance(arg, str) or len(arg) > MAX_ARG_CHARS or "\0" in arg:
            raise InvalidSpecError(f"args[{index}] must be a string of at most {MAX_ARG_CHARS} characters, without NUL")
    return args


def validate_env(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The variables, sorted by name, or InvalidSpecError saying which one is refused and why."""
    if len(env) > MAX_ENV_VARIABLES:
        raise InvalidSpecError(f"at most {MAX_ENV_VARIABLES} env variables are allowed, got {len(env)}")
    for name, value in env.items():
        shown = repr(str(name)[:80])
        if not isinstance(name, str) or len(name) > MAX_ENV_NAME_CHARS or not re.fullmatch(ENV_NAME_PATTERN, name):
            raise InvalidSpecError(f"env name {shown} must be letters, digits and _ (not first a digit), "
                                   f"at most {MAX_ENV_NAME_CHARS} characters")
        if name in RESERVED_ENV_NAMES or name.startswith(RESERVED_ENV_PREFIXES):
            raise InvalidSpecError(f"env name {shown} is the sandbox's own and cannot be set "
                                   f"({', '.join(sorted(RESERVED_ENV_NAMES))}, {'*, '.join(RESERVED_ENV_PREFIXES)}*)")
        if not isinstance(value, str) or len(value) > MAX_ENV_VALUE_CHARS or "\0" in value:
            raise InvalidSpecError(f"env {shown} must be a string of at most {MAX_ENV_VALUE_CHARS} characters, without NUL")
    return tuple(sorted(env.items()))


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


# --- the same rules as regular expressions, for the OpenAPI document (a unit test compares them) ----

# What base64.b64decode(validate=True) accepts: whole groups of four, then padding; after whole
# groups any number of `=` (Python ignores them).
BASE64_PATTERN = (
    r"^(?:(?:[A-Za-z0-9+/]{4})+=*|(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=))?$"
)


def _input_path_pattern() -> str:
    """Names that validate_file_path accepts, but for a component's length in UTF-8 bytes."""
    forbidden = _ranges(sorted(CONTROL_CHARACTERS)) + r"\\/"
    char = f"[^{forbidden}]"
    name = rf"(?:\.?[^{forbidden}.]{char}*|\.\.{char}+)"  # neither `.` nor `..`
    dropped = r"(?:\.?/)*"  # empty and `.` names, each with its slash
    return rf"^(?:\./{dropped})?{name}(?:/{dropped}{name}){{0,{MAX_PATH_DEPTH - 1}}}(?:/\.?)*$"


def _ranges(codepoints: list[int]) -> str:
    """A regular-expression character class body for sorted `codepoints`, e.g. `\\u0000-\\u001f`."""
    runs: list[list[int]] = []
    for point in codepoints:
        if runs and point == runs[-1][1] + 1:
            runs[-1][1] = point
        else:
            runs.append([point, point])
    return "".join(rf"\u{low:04x}" + (rf"-\u{high:04x}" if high > low else "") for low, high in runs)


INPUT_PATH_PATTERN = _input_path_pattern()
