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
from dataclasses import asdict, dataclass, fields

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
    """The limits one execution runs under, as resolved; reported back in its result. A request names
    each by its field's name (`cpu_time_seconds`...), a SandboxExecution's spec in camelCase."""

    timeout_seconds: int  # the program's wall clock
    max_memory_mb: int  # the sandbox's memory, the compiler's and the program's
    cpu_time_seconds: int | None = None  # the program's CPU time; None: only the wall clock bounds it
    max_file_size_mb: int = 64  # the largest file the program or the compiler may write
    compile_timeout_seconds: int | None = None  # the compile stage's wall clock; None: nothing to compile
    # The whole execution's wall clock: the compile stage and every run (one, or one per test case).
    deadline_seconds: int = 0

    def __post_init__(self) -> None:
        if not self.deadline_seconds:  # one run after the compile stage
            object.__setattr__(self, "deadline_seconds", self.timeout_seconds + (self.compile_timeout_seconds or 0))

    def as_dict(self) -> dict[str, int | None]:
        return asdict(self)


# What a request may ask for, by name (the deadline follows from them).
LIMIT_NAMES = ("timeout_seconds", "max_memory_mb", "cpu_time_seconds", "max_file_size_mb", "compile_timeout_seconds")
MAX_TESTS = 100
COMPARISONS = ("trailing_whitespace", "exact")  # the first is the default
MAX_TEST_NAME_CHARS = 128


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
    default_cpu_time_seconds: int = setting(0, "CPU-time limit of the program when a request gives none; "
                                                "0: none, the wall clock bounds it", minimum=0)
    max_cpu_time_seconds: int = setting(60, "largest CPU-time limit a request may ask for", minimum=1)
    default_file_size_mb: int = setting(64, "largest file a program may write when a request gives no limit", minimum=1)
    max_file_size_mb: int = setting(64, "largest file-size limit a request may ask for", minimum=1)
    default_compile_timeout_seconds: int = setting(20, "wall-clock limit of the compile stage when a request gives none",
                                                   minimum=1)
    max_compile_timeout_seconds: int = setting(60, "largest compile-stage limit a request may ask for", minimum=1)
    max_deadline_seconds: int = setting(300, "longest an execution with test cases may take, the compile stage "
                                        "and every test together; tests past it are skipped", minimum=1)
    # Enough for node's thread pool, too few for a fork bomb.
    max_processes: int = setting(128, "processes and threads per execution", minimum=1)

    def __post_init__(self) -> None:
        check(self)
        for default, low, high in (
            ("default_timeout_seconds", self.min_timeout_seconds, "max_timeout_seconds"),
            ("default_memory_mb", self.min_memory_mb, "max_memory_mb"),
            ("default_cpu_time_seconds", 0, "max_cpu_time_seconds"),
            ("default_file_size_mb", 1, "max_file_size_mb"),
            ("default_compile_timeout_seconds", 1, "max_compile_timeout_seconds"),
        ):
            value, maximum = getattr(self, default), getattr(self, high)
            if not low <= value <= maximum:
                raise SettingError(f"{variable(type(self), default)} ({value}) must lie between {low} "
                                   f"and {variable(type(self), high)} ({maximum})")

    def bounds(self) -> dict[str, tuple[int, int, int]]:
        """(smallest, default, largest) of each limit a request may ask for, by name."""
        return {
            "timeout_seconds": (self.min_timeout_seconds, self.default_timeout_seconds, self.max_timeout_seconds),
            "max_memory_mb": (self.min_memory_mb, self.default_memory_mb, self.max_memory_mb),
            "cpu_time_seconds": (1, self.default_cpu_time_seconds, self.max_cpu_time_seconds),
            "max_file_size_mb": (1, self.default_file_size_mb, self.max_file_size_mb),
            "compile_timeout_seconds": (1, self.default_compile_timeout_seconds, self.max_compile_timeout_seconds),
        }

    def resolve(self, requested: Mapping[str, int | None], *, compiled: bool = False, tests: int = 0) -> EffectiveLimits:
        """The effective limits for a request's `requested` ones (absent or None: the default); raises
        InvalidSpecError out of bounds. Without a compile stage there is no compile limit; with `tests`
        test cases the deadline covers them all, up to max_deadline_seconds."""
        effective = {}
        for name, (low, default, high) in self.bounds().items():
            value = requested.get(name)
            if value is None:
                value = default or None  # a default of 0 (CPU time): no limit
            elif not low <= value <= high:
                raise InvalidSpecError(f"{name} must be between {low} and {high}, got {value}")
            effective[name] = value
        if not compiled:
            effective["compile_timeout_seconds"] = None
        if tests:
            stages = (effective["compile_timeout_seconds"] or 0) + tests * effective["timeout_seconds"]
            effective["deadline_seconds"] = min(stages, self.max_deadline_seconds)
        return EffectiveLimits(**effective)


@dataclass(frozen=True)
class InputFile:
    """A file to materialise in the work directory; `content` is text or base64 per `encoding`."""

    path: str
    content: str
    encoding: str = "utf-8"


@dataclass(frozen=True)
class TestCase:
    """One test case: the program's stdin, and the stdout it must print. The expected output never
    enters the sandbox: the runner reports a digest of the output, compared outside."""

    __test__ = False  # not a pytest class

    input: str
    expected_output: str
    name: str | None = None


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
    # Test cases: the program runs once per case instead of once with `stdin`.
    tests: tuple[TestCase, ...] = ()
    comparison: str = COMPARISONS[0]


def resolve_request(
    *,
    catalogue: Catalogue,
    limits: ExecutionLimits,
    language: str,
    code: str,
    stdin: str | None,
    files: Iterable[InputFile],
    requested_limits: Mapping[str, int | None],
    args: Iterable[str] = (),
    env: Mapping[str, str] | None = None,
    tests: Iterable[TestCase] = (),
    comparison: str | None = None,
    offered: Iterable[str] | None = None,
) -> ExecutionRequest:
    """The request as it will run; InvalidSpecError says what to change.

    `requested_limits` maps the names of LIMIT_NAMES to what the request asks (absent or None: the
    default). `offered` narrows the catalogue to the languages a backend can run (the local one offers
    those installed on its host).
    """
    found = catalogue.find(language)
    names = sorted(catalogue.languages if offered is None else offered)
    if found is None or found.name not in names:
        raise InvalidSpecError(f"Unsupported language: {language!r} (supported: {', '.join(names)})")
    unknown = sorted(set(requested_limits) - set(LIMIT_NAMES))
    if unknown:
        raise InvalidSpecError(f"unknown limit {unknown[0]!r} (limits: {', '.join(LIMIT_NAMES)})")
    cases = validate_tests(tests, stdin)
    effective = limits.resolve(requested_limits, compiled=found.compiled, tests=len(cases))
    normalised = normalise_input_files(files, main_file=found.main_file)
    variables = validate_env(env or {})
    clash = sorted({name for name, _ in variables} & catalogue.env_names())
    if clash:
        raise InvalidSpecError(f"env name {clash[0]!r} is a runtime's own and cannot be set "
                               f"({', '.join(sorted(catalogue.env_names()))})")
    comparison = COMPARISONS[0] if comparison is None else comparison
    if comparison not in COMPARISONS:
        raise InvalidSpecError(f"comparison must be one of {', '.join(COMPARISONS)}, got {str(comparison)[:40]!r}")
    return ExecutionRequest(language=found, code=code, stdin=stdin, files=tuple(normalised), limits=effective,
                            args=validate_args(args), env=variables, tests=cases, comparison=comparison)


def validate_tests(tests: Iterable[TestCase], stdin: str | None) -> tuple[TestCase, ...]:
    """The test cases, or InvalidSpecError saying which one is refused."""
    cases = tuple(tests)
    if len(cases) > MAX_TESTS:
        raise InvalidSpecError(f"at most {MAX_TESTS} tests are allowed, got {len(cases)}")
    if cases and stdin is not None:
        raise InvalidSpecError("give either stdin (input_data) or tests, not both: each test has its own input")
    for index, case in enumerate(cases):
        for name, value in (("input", case.input), ("expected_output", case.expected_output)):
            if not isinstance(value, str):
                raise InvalidSpecError(f"tests[{index}].{name} must be a string")
        if case.name is not None and (not isinstance(case.name, str) or len(case.name) > MAX_TEST_NAME_CHARS
                                      or case.name.translate(CONTROL_CHARACTERS) != case.name):
            raise InvalidSpecError(f"tests[{index}].name must be at most {MAX_TEST_NAME_CHARS} characters, "
                                   "without control characters")
    return cases


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
# A test case's name: no control characters (validate_tests).
TEST_NAME_PATTERN = rf"^[^{_ranges(sorted(CONTROL_CHARACTERS))}]*$"
