"""The shared contract: file-name validation, limits, one resolution of a request, the runner's spec."""

from __future__ import annotations

import base64
import random
import re

import pytest

from sandbox_contract.catalogue import load_catalogue
from sandbox_contract.crd import MAX_INLINE_INPUT_BYTES, STATUS_BUDGET_BYTES
from sandbox_contract.request import (
    BASE64_PATTERN,
    INPUT_PATH_PATTERN,
    MAX_PATH_CHARS,
    LIMIT_NAMES,
    RESERVED_ENV_NAMES,
    RESERVED_ENV_PREFIXES,
    EffectiveLimits,
    ExecutionLimits,
    InputFile,
    InvalidSpecError,
    normalise_input_files,
    resolve_request,
    validate_file_path,
)
from sandbox_contract.runner_spec import build_runner_spec, sandbox_environment
from sandbox_runner import OUTPUT_LIMITS

CATALOGUE = load_catalogue()


def resolve(**fields):
    """resolve_request with defaults; the names of LIMIT_NAMES among `fields` are the requested limits."""
    requested = {name: fields.pop(name) for name in LIMIT_NAMES if name in fields}
    request = {"language": "python", "code": "", "stdin": None, "files": [], **fields}
    return resolve_request(catalogue=CATALOGUE, limits=ExecutionLimits(), requested_limits=requested, **request)


@pytest.mark.parametrize("given,expected", [
    ("data.txt", "data.txt"),
    ("./a//b/./c.txt", "a/b/c.txt"),
    ("dir/", "dir"),
    ("ünï cødé.txt", "ünï cødé.txt"),
])
def test_file_paths_are_normalised(given, expected):
    assert validate_file_path(given) == expected


@pytest.mark.parametrize("path,fragment", [
    ("", "non-empty"),
    ("/etc/passwd", "relative"),
    ("../x", ".."),
    ("a/../../x", ".."),
    ("a/..", ".."),
    (".", "does not name"),
    ("a\\b", "backslash"),
    ("a\x00b", "control"),
    ("a\x1bb", "control"),
    ("a\x85b", "control"),
    ("a\x7fb", "control"),
    ("é" * 128, "255 bytes"),
    ("ok/" + "界" * 86, "255 bytes"),
    ("x" * 300, "longer"),
    ("/".join("d" * 9) + "/f", "deeper"),
])
def test_bad_file_paths_are_refused_with_a_reason(path, fragment):
    with pytest.raises(InvalidSpecError, match=fragment):
        validate_file_path(path)


def test_files_clashing_with_each_other_or_the_code_are_refused():
    with pytest.raises(InvalidSpecError, match="twice"):
        normalise_input_files([InputFile("a.txt", ""), InputFile("./a.txt", "")], main_file="main.py")
    with pytest.raises(InvalidSpecError, match="code file"):
        normalise_input_files([InputFile("main.py", "")], main_file="main.py")
    with pytest.raises(InvalidSpecError, match="directory"):
        normalise_input_files([InputFile("a", ""), InputFile("a/b", "")], main_file="main.py")
    with pytest.raises(InvalidSpecError, match="the code file 'main.py' cannot also be a directory"):
        normalise_input_files([InputFile("main.py/x", "")], main_file="main.py")
    with pytest.raises(InvalidSpecError, match="base64"):
        normalise_input_files([InputFile("b", "@@", "base64")], main_file="main.py")
    with pytest.raises(InvalidSpecError, match="at most"):
        normalise_input_files([InputFile(f"f{i}", "") for i in range(33)], main_file="main.py")


def test_limits_default_and_bounds():
    limits = ExecutionLimits()
    assert limits.resolve({}) == EffectiveLimits(timeout_seconds=10, max_memory_mb=256)
    assert limits.resolve({"timeout_seconds": 60, "max_memory_mb": 1024}) == EffectiveLimits(timeout_seconds=60, max_memory_mb=1024)
    for timeout, memory in [(0, None), (61, None), (None, 15), (None, 1025)]:
        with pytest.raises(InvalidSpecError):
            limits.resolve({"timeout_seconds": timeout, "max_memory_mb": memory})


@pytest.mark.parametrize("fields", [
    {"default_timeout_seconds": 61}, {"default_memory_mb": 2048}, {"default_memory_mb": 8}, {"default_timeout_seconds": 0},
])
def test_limits_whose_default_lies_outside_their_bounds_are_refused(fields):
    with pytest.raises(ValueError):
        ExecutionLimits(**fields)


def test_a_request_is_resolved_once_for_both_programs():
    request = resolve(language=" PY ", code="print(1)", files=[InputFile("./a.txt", "x")], timeout_seconds=5)
    assert request.language.name == "python"
    assert request.files == (InputFile("a.txt", "x"),)
    assert request.limits == EffectiveLimits(timeout_seconds=5, max_memory_mb=256)
    with pytest.raises(InvalidSpecError, match=r"Unsupported language: 'cobol' \(supported: bash, c, cpp, csharp, fortran, go, java, javascript, lua, perl, php, python, ruby, rust, typescript\)"):
        resolve(language="cobol")
    with pytest.raises(InvalidSpecError, match=r"\(supported: bash\)"):
        resolve_request(catalogue=CATALOGUE, limits=ExecutionLimits(), language="python", code="", stdin=None,
                        files=[], requested_limits={}, offered=["bash"])
    with pytest.raises(InvalidSpecError, match="max_memory_mb must be between 16 and 1024, got 0"):
        resolve(max_memory_mb=0)


def test_spec_document_follows_the_runner_protocol():
    blob = base64.b64encode(b"\x00\xff").decode()
    spec = build_runner_spec(
        resolve(code="print(1)", stdin="in", files=[InputFile("./d/x.bin", blob, "base64")],
                timeout_seconds=5, max_memory_mb=64),
        workdir="/w",
    )
    assert spec["command"] == ["python3", "/w/main.py"]
    assert spec["workdir"] == "/w"
    assert spec["files"] == [
        {"path": "main.py", "content": "print(1)", "encoding": "utf-8"},
        {"path": "d/x.bin", "content": blob, "encoding": "base64"},
    ]
    assert (spec["stdin"], spec["timeout_seconds"], spec["max_memory_mb"], spec["max_processes"]) == ("in", 5, 64, None)
    assert spec["env"]["HOME"] == "/w" and "PATH" in spec["env"]
    assert "limits" not in spec  # the output caps are the runner's own


def test_inline_inputs_and_the_result_fit_in_one_kubernetes_object():
    # etcd refuses requests over ~1.5 MiB; the custom resource carries inline inputs and the result.
    assert MAX_INLINE_INPUT_BYTES + OUTPUT_LIMITS["result_bytes"] < 1.5 * 1024 * 1024 - 64 * 1024
    assert OUTPUT_LIMITS["result_bytes"] <= STATUS_BUDGET_BYTES


def _accepted(path: str) -> bool:
    try:
        validate_file_path(path)
    except InvalidSpecError as error:
        return "255 bytes" in str(error)  # the one rule the pattern leaves out: UTF-8 bytes per name
    return True


def test_the_input_path_pattern_accepts_exactly_the_names_the_server_accepts():
    alphabet = ["a", "é", " ", ".", "..", "/", "\\", "\x00", "\x1b", "\x7f", "\x85", "\u2028"]
    rng = random.Random(9)
    names = ["/".join("d" * depth) for depth in range(1, 12)] + ["./" * 3 + "a", "a/./b//c/", "..a", "a..", "..."]
    names += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8))) for _ in range(20000)]
    for name in names:
        if len(name) <= MAX_PATH_CHARS:
            assert (re.fullmatch(INPUT_PATH_PATTERN, name) is not None) == _accepted(name), repr(name)


def test_the_base64_pattern_accepts_exactly_what_the_server_decodes():
    rng = random.Random(7)
    for _ in range(20000):
        text = "".join(rng.choice("QUJD+/=a!") for _ in range(rng.randint(0, 10)))
        try:
            base64.b64decode(text, validate=True)
            decodes = True
        except ValueError:
            decodes = False
        assert (re.fullmatch(BASE64_PATTERN, text) is not None) == decodes, repr(text)


def test_args_and_env_reach_the_runner_spec_and_the_sandbox_keeps_its_own_variables():
    spec = build_runner_spec(resolve(language="bash", code="echo $1", args=["a b", "-x"], env={"GREETING": "hi", "A_1": ""}))
    assert spec["command"] == ["bash", "/sandbox/work/main.sh", "a b", "-x"]
    assert (spec["env"]["GREETING"], spec["env"]["A_1"]) == ("hi", "")
    for name in sandbox_environment("/w"):  # a request can never set one of the sandbox's own
        assert name in RESERVED_ENV_NAMES or name.startswith(RESERVED_ENV_PREFIXES), name


@pytest.mark.parametrize("fields,fragment", [
    ({"args": ["x"] * 65}, "at most 64 args"),
    ({"args": ["a\x00b"]}, r"args\[0\] must be a string"),
    ({"args": ["x" * 4097]}, r"args\[0\]"),
    ({"env": {"PATH": "/tmp"}}, "'PATH' is the sandbox's own"),
    ({"env": {"LD_PRELOAD": "/tmp/x.so"}}, "'LD_PRELOAD' is the sandbox's own"),
    ({"env": {"LC_ALL": "C"}}, "'LC_ALL' is the sandbox's own"),
    ({"env": {"1X": ""}}, "letters, digits and _"),
    ({"env": {"A=B": ""}}, "letters, digits and _"),
    ({"env": {"X": "a\x00"}}, "without NUL"),
    ({"env": {f"V{i}": "" for i in range(33)}}, "at most 32 env"),
])
def test_bad_args_and_env_are_refused_with_a_reason(fields, fragment):
    with pytest.raises(InvalidSpecError, match=fragment):
        resolve(**fields)
