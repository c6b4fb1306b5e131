"""The runner's pure helpers: spec checking, paths, JSON, classification, the result budget."""

import json
import signal

import pytest

from sandbox_runner import ResultLineError, read_result
from sandbox_runner.runner import (
    DEFAULT_LIMITS,
    SpecError,
    check_spec,
    classify,
    decode_file,
    empty_result,
    parse_json,
    serialise_within,
    split_relative_path,
    to_json,
)

MINIMAL = {"command": ["true"], "workdir": "/tmp/w", "timeout_seconds": 1}


def test_check_spec_fills_defaults():
    spec = check_spec(dict(MINIMAL))
    assert spec["files"] == [] and spec["env"] == {} and spec["stdin"] == b""
    assert spec["max_memory_mb"] is None and spec["max_processes"] is None
    assert spec["limits"] == DEFAULT_LIMITS


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"command": []}, "'command' must be a non-empty list of strings"),
        ({"command": "python3 main.py"}, "'command' must be a non-empty list of strings"),
        ({"workdir": "relative/dir"}, "'workdir' must be an absolute path"),
        ({"timeout_seconds": 0}, "'timeout_seconds' must be a positive number"),
        ({"timeout_seconds": True}, "'timeout_seconds' must be a positive number"),
        ({"max_memory_mb": -1}, "'max_memory_mb' must be an integer >= 1"),
        ({"max_processes": 2.5}, "'max_processes' must be an integer >= 1"),
        ({"env": {"A=B": "x"}}, "invalid variable name"),
        ({"env": {"A": 1}}, "'env' must be an object of strings"),
        ({"stdin": 5}, "'stdin' must be a string or null"),
        ({"stdin": "\ud800"}, "'stdin' is not valid Unicode"),
        ({"limits": {"stdout": 5}}, "'limits' may only have the fields"),
        ({"limits": {"result_bytes": 100}}, "'limits.result_bytes' must be an integer >= 4096"),
        ({"surprise": 1}, "unknown field 'surprise'"),
    ],
)
def test_check_spec_rejects_with_a_clear_message(change, message):
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace("|", r"\|")):
        check_spec({**MINIMAL, **change})


def test_check_spec_requires_the_essentials():
    with pytest.raises(SpecError, match="'timeout_seconds' is required"):
        check_spec({"command": ["true"], "workdir": "/w"})
    with pytest.raises(SpecError, match="must be a JSON object"):
        check_spec(["not", "an", "object"])


@pytest.mark.parametrize("path", ["a.txt", "dir/sub/file.bin", "héllo wörld.txt", ".hidden"])
def test_relative_paths_accepted(path):
    assert split_relative_path(path) == path.split("/")


@pytest.mark.parametrize(
    "path", ["", "/etc/passwd", "../x", "a/../../x", "a//b", "./a", "a/.", "a/", "nul\0byte", None]
)
def test_traversal_and_unnormalised_paths_refused(path):
    with pytest.raises(SpecError):
        split_relative_path(path)


def test_decode_file_text_and_base64():
    assert decode_file({"path": "a", "content": "héllo"}) == ("a", "héllo".encode())
    assert decode_file({"path": "b", "content": "AAH/", "encoding": "base64"}) == ("b", b"\x00\x01\xff")
    with pytest.raises(SpecError, match="not valid base64"):
        decode_file({"path": "b", "content": "AA*H/", "encoding": "base64"})
    with pytest.raises(SpecError, match="'encoding' must be"):
        decode_file({"path": "b", "content": "x", "encoding": "latin-1"})
    with pytest.raises(SpecError, match="'content' must be a string"):
        decode_file({"path": "b", "content": None})


def test_parse_json_matches_the_json_module():
    text = ' {"a": [1, 2.5, "x\\u00e9", null, true, false], "b": {"c": -3e2}} \n'
    assert parse_json(text) == json.loads(text)
    for bad in ["", "{", '{"a": }', "[1] [2]", "NaN", '{"a": Infinity}']:
        with pytest.raises(ValueError):
            parse_json(bad)


def test_to_json_is_compact_ascii_and_round_trips():
    value = {"s": "é\n\"\u2028😀", "n": None, "t": True, "f": False, "i": -7, "d": {"x": {"y": "z"}}}
    encoded = to_json(value)
    assert encoded.isascii() and " " not in encoded.replace('" "', "")
    assert json.loads(encoded) == value


def _classified(wait_status, *, timed_out=False, oom=False, memory=None, cpu_limit=None, cpu_ms=0):
    result = empty_result("completed", None)
    result["oom_killed"], result["cpu_time_ms"] = oom, cpu_ms
    stage = {"timeout_seconds": 2.5, "cpu_time_seconds": cpu_limit}
    classify(result, wait_status, timed_out, stage, {"max_memory_mb": memory, "limits": {"file_bytes": 2 << 20}})
    return result


def test_classify_every_ending():
    assert _classified(0)["status"] == "completed" and _classified(0)["reason"] is None
    exited = _classified(3 << 8)
    assert (exited["status"], exited["exit_code"], exited["reason"]) == ("error_runtime", 3, "exited with code 3")
    killed = _classified(11)  # a wait status for "killed by signal 11"
    assert (killed["exit_code"], killed["signal"], killed["reason"]) == (139, "SIGSEGV", "killed by signal SIGSEGV")
    timeout = _classified(9, timed_out=True)
    assert (timeout["status"], timeout["reason"]) == ("timeout", "wall-clock limit of 2.5 s exceeded")
    oom = _classified(9, oom=True, memory=64)
    assert (oom["status"], oom["reason"], oom["exit_code"]) == ("error_runtime", "out of memory: exceeded 64 MB", 137)
    assert _classified(9, oom=True)["reason"] == "out of memory: killed by the kernel's OOM killer"
    assert oom["limit_exceeded"] == "memory" and timeout["limit_exceeded"] == "wall_time"
    xcpu = _classified(signal.SIGXCPU, cpu_limit=1, cpu_ms=1001)
    assert (xcpu["status"], xcpu["reason"], xcpu["limit_exceeded"]) == ("timeout", "CPU-time limit of 1 s exceeded", "cpu_time")
    # SIGKILL at the hard limit (the program caught SIGXCPU) is the CPU limit too, but not below it
    assert _classified(9, cpu_limit=1, cpu_ms=2000)["limit_exceeded"] == "cpu_time"
    assert _classified(9, cpu_limit=1, cpu_ms=10)["limit_exceeded"] is None
    xfsz = _classified(signal.SIGXFSZ)
    assert (xfsz["reason"], xfsz["limit_exceeded"]) == ("file-size limit of 2 MB exceeded", "file_size")


def test_serialise_within_keeps_small_results_whole():
    result = empty_result("completed", None)
    result["stdout"] = "hello\n"
    result["output_files"] = {"a.txt": "x"}
    assert json.loads(serialise_within(dict(result), 4096)) == result


def test_serialise_within_shrinks_files_then_streams_and_flags_it():
    result = empty_result("completed", None)
    result["stdout"] = "é" * 5000  # six bytes each once escaped
    result["stderr"] = "\x01" * 5000
    result["output_files"] = {"big.txt": "y" * 3000, "small.txt": "z"}
    document = serialise_within(result, 4096)
    parsed = json.loads(document)
    assert len(document.encode()) <= 4096
    assert parsed["output_files_truncated"] and "big.txt" not in parsed["output_files"]
    assert parsed["stderr_truncated"] and parsed["stdout_truncated"]
    assert parsed["stdout"] == "é" * len(parsed["stdout"])


@pytest.mark.parametrize("budget", [4096, 5000, 10_000, 65_536])
def test_serialise_within_never_exceeds_the_budget(budget):
    result = empty_result("error_runtime", "exited with code 1")
    result["stdout"] = "".join(chr(c) for c in range(0x20, 0x3000)) * 4
    result["stderr"] = "\"\\" * 20_000
    result["output_files"] = {f"f{i}": {"content": "QUJD" * 500, "encoding": "base64"} for i in range(20)}
    assert len(serialise_within(result, budget)) <= budget


def test_read_result_takes_the_last_marker_line():
    output = 'noise\n@@sandbox-result@@ {"status": "timeout"}\n@@sandbox-result@@ {"status": "completed"}\n'
    assert read_result(output) == {"status": "completed"}
    with pytest.raises(ResultLineError, match="no result line"):
        read_result("just noise\n")
    with pytest.raises(ResultLineError, match="not valid JSON"):
        read_result("@@sandbox-result@@ {oops\n")
