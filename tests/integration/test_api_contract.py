"""The HTTP contract, against a real server and a real backend (local here; kubernetes in tests/e2e).

Nothing here assumes the local backend: no latency, no host interpreter versions, no host processes.
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import json
import random
import re
import string
import time
import uuid

import httpx
import pytest
import schemathesis
import schemathesis.engine
from schemathesis.checks import CHECKS
from schemathesis.engine import events as engine_events
from schemathesis.engine.run import PhaseName
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from tests.programs.languages import PROGRAMS

EXECUTION_ID = re.compile(r"^exec-[0-9a-f]{20}$")
RESULT_FIELDS = {
    "execution_id", "language", "status", "reason", "stdout", "stderr", "exit_code", "signal", "oom_killed",
    "duration_ms", "memory_used_mb", "output_files", "stdout_truncated", "stderr_truncated", "output_files_truncated",
    "cpu_time_ms", "limit_exceeded", "compile", "tests", "test_summary", "limits",
}
DEFAULT_LIMITS = {"timeout_seconds": 10, "max_memory_mb": 256, "cpu_time_seconds": None, "max_file_size_mb": 64,
                  "compile_timeout_seconds": None, "deadline_seconds": 10}
BINARY = bytes(range(256)) * 4



def poll_until_finished(client: httpx.Client, execution_id: str, seconds: float = 180) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        response = client.get(f"/api/sandbox/executions/{execution_id}")
        assert response.status_code == 200, response.text
        if response.json()["status"] not in ("pending", "running"):
            return response.json()
        time.sleep(0.2)
    raise AssertionError(f"{execution_id} did not finish in {seconds} s")


def assert_error(response: httpx.Response, status: int, *fragments: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"] and body["error"], body
    for fragment in fragments:
        assert fragment in body["error"], body


# --- running code -------------------------------------------------------------------------------

def run_concurrently(api, requests: dict[str, dict]) -> dict[str, dict]:
    """Each named request executed at the same time; their results by name."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(requests)) as pool:
        futures = {name: pool.submit(api.execute, **body) for name, body in requests.items()}
        return {name: future.result() for name, future in futures.items()}


@pytest.mark.parametrize("language", sorted(PROGRAMS))
def test_every_language_reads_stdin_reports_its_exit_code_and_compiler_errors(api, language):
    programs = PROGRAMS[language]
    requests = {"greet": {"code": programs.greet, "input_data": "world\n"}, "fail": {"code": programs.fail}}
    if programs.broken is not None:
        requests["broken"] = {"code": programs.broken}
    results = run_concurrently(api, {name: {"language": language, **body} for name, body in requests.items()})
    greet, fail = results["greet"], results["fail"]
    assert (greet["status"], greet["stdout"], greet["exit_code"]) == ("completed", "hello, world\n", 0), greet
    assert (fail["status"], fail["exit_code"], fail["reason"]) == ("error_runtime", 3, "exited with code 3"), fail
    assert "oops" in fail["stderr"]
    if programs.broken is None:
        assert greet["compile"] is None and greet["limits"]["compile_timeout_seconds"] is None
        return
    assert greet["compile"]["exit_code"] == 0 and greet["compile"]["duration_ms"] > 0, greet
    assert greet["limits"]["compile_timeout_seconds"] == 20
    assert greet["output_files"] == {}, "what the compiler left is not an output of the program"
    broken = results["broken"]
    assert broken["status"] == "error_compile", broken
    assert broken["reason"].startswith("compilation failed") and broken["exit_code"] is None
    compiler_output = broken["compile"]["stdout"] + broken["compile"]["stderr"]
    assert programs.compiler_says in compiler_output and broken["compile"]["exit_code"] != 0, broken


def test_the_languages_are_the_catalogues_and_say_whether_they_compile(api):
    listed = {entry["name"]: entry for entry in api.get("/api/sandbox/languages").json()["languages"]}
    assert set(listed) == set(PROGRAMS)
    assert {name for name, entry in listed.items() if entry["compiled"]} == {
        name for name, programs in PROGRAMS.items() if programs.broken is not None}
    assert all(re.match(r"^\d+(\.\d+)*", entry["version"]) for entry in listed.values()), listed


def test_cpu_time_and_wall_clock_limits_each_end_the_run_that_exceeds_it(api):
    results = run_concurrently(api, {
        "busy": {"language": "python", "code": "while True:\n    pass", "cpu_time_seconds": 1, "timeout_seconds": 20},
        "sleeping": {"language": "bash", "code": "sleep 30", "cpu_time_seconds": 5, "timeout_seconds": 2},
        "busy_c": {"language": "c", "code": "int main(void) { for (volatile long i = 0;; i++); }",
                   "cpu_time_seconds": 1, "timeout_seconds": 20},
    })
    for name in ("busy", "busy_c"):
        busy = results[name]
        assert (busy["status"], busy["limit_exceeded"], busy["signal"]) == ("timeout", "cpu_time", "SIGXCPU"), busy
        assert busy["reason"] == "CPU-time limit of 1 s exceeded"
        assert busy["cpu_time_ms"] >= 800 and busy["duration_ms"] < 15000, busy  # the kernel counts in ticks
    sleeping = results["sleeping"]
    assert (sleeping["status"], sleeping["limit_exceeded"]) == ("timeout", "wall_time"), sleeping
    assert sleeping["reason"] == "wall-clock limit of 2 s exceeded" and sleeping["cpu_time_ms"] < 1000


def test_the_file_size_limit_stops_a_write_and_says_so(api):
    code = "with open('big.bin', 'wb') as f:\n    f.write(b'x' * (3 << 20))"
    result = api.execute(language="python", code=code, max_file_size_mb=1)
    assert (result["status"], result["limit_exceeded"]) == ("error_runtime", "file_size"), result
    assert "File too large" in result["stderr"] and "file-size limit of 1 MB" in result["reason"]
    c_code = ('#include <stdio.h>\nint main(void) { FILE *f = fopen("big.bin", "w");\n'
              '  for (int i = 0; i < (3 << 20); i++) fputc(120, f); return fclose(f); }\n')
    result = api.execute(language="c", code=c_code, max_file_size_mb=1)
    assert (result["signal"], result["limit_exceeded"]) == ("SIGXFSZ", "file_size"), result


def test_java_and_go_run_and_allocate_within_256_mb(api):
    java = ("public class Main { public static void main(String[] args) {\n"
            "  byte[][] kept = new byte[100][]; for (int i = 0; i < 100; i++) kept[i] = new byte[1 << 20];\n"
            "  System.out.println(\"kept \" + kept.length + \" MiB, heap max \" + (Runtime.getRuntime().maxMemory() >> 20));\n} }\n")
    go = ('package main\n\nimport "fmt"\n\nfunc main() {\n\tkept := make([][]byte, 150)\n'
          '\tfor i := range kept {\n\t\tkept[i] = make([]byte, 1<<20)\n\t\tkept[i][0] = 1\n\t}\n'
          '\tfmt.Println("kept", len(kept), "MiB")\n}\n')
    results = run_concurrently(api, {
        "java": {"language": "java", "code": java, "max_memory_mb": 256},
        "go": {"language": "go", "code": go, "max_memory_mb": 256},
    })
    assert results["java"]["status"] == "completed" and results["java"]["stdout"].startswith("kept 100 MiB"), results["java"]
    # The heap is sized from the execution's limit, not from the machine's memory.
    assert int(results["java"]["stdout"].split()[-1]) < 256, results["java"]
    assert (results["go"]["status"], results["go"]["stdout"]) == ("completed", "kept 150 MiB\n"), results["go"]


def test_a_compile_stage_past_its_limit_is_an_error_compile(api):
    # Constant evaluation of 10^10 steps keeps g++ busy for minutes.
    code = ("constexpr long spin() { long s = 0;\n"
            "  for (long i = 0; i < 100000; i++) for (long j = 0; j < 100000; j++) s += i ^ j; return s; }\n"
            "int main() { constexpr long v = spin(); return v == 0; }\n")
    result = api.execute(language="cpp", code=code, compile_timeout_seconds=1)
    assert (result["status"], result["reason"]) == ("error_compile", "compilation exceeded its wall-clock limit of 1 s"), result
    assert result["compile"]["duration_ms"] >= 1000 and result["exit_code"] is None

def test_result_has_every_field_of_the_contract(api):
    result = api.execute(language="python", code="import sys; print('out'); print('err', file=sys.stderr)")
    assert set(result) == RESULT_FIELDS
    assert EXECUTION_ID.match(result["execution_id"])
    assert (result["stdout"], result["stderr"]) == ("out\n", "err\n")
    assert isinstance(result["duration_ms"], int) and result["duration_ms"] >= 0
    assert result["memory_used_mb"] is None or result["memory_used_mb"] >= 0
    assert result["output_files"] == {}
    assert not (result["stdout_truncated"] or result["stderr_truncated"] or result["output_files_truncated"])
    # The limits it ran under: the server's defaults, as the request gave none.
    assert result["limits"] == DEFAULT_LIMITS
    assert result["compile"] is None and result["limit_exceeded"] is None and result["cpu_time_ms"] >= 0


def test_result_reports_the_limits_the_request_asked_for(api):
    result = api.execute(language="bash", code="true", timeout_seconds=3, max_memory_mb=64, cpu_time_seconds=2,
                         max_file_size_mb=1, compile_timeout_seconds=5)
    # No compile stage for bash, so no compile limit.
    assert (result["status"], result["limits"]) == ("completed", {
        "timeout_seconds": 3, "max_memory_mb": 64, "cpu_time_seconds": 2, "max_file_size_mb": 1,
        "compile_timeout_seconds": None, "deadline_seconds": 3})


def test_args_and_env_reach_the_program(api):
    code = 'printf "%s|" "$@"; echo "$GREETING $HOME"'
    result = api.execute(language="bash", code=code, args=["a b", "-n", ""], env={"GREETING": "hi"})
    assert (result["status"], result["stdout"]) == ("completed", "a b|-n||hi /sandbox/work\n")


def test_the_sandbox_keeps_its_own_variables(api):
    for name in ("PATH", "LD_PRELOAD", "LC_ALL", "HOME"):
        response = api.post("/api/sandbox/execute", json={"language": "bash", "code": "true", "env": {name: "/tmp"}})
        assert_error(response, 400, f"env name {name!r} is the sandbox's own")


def test_language_aliases_resolve_to_the_catalogue_name(api):
    assert api.execute(language="PY", code="print(1)")["language"] == "python"


def test_stdin_reaches_the_program(api):
    result = api.execute(language="python", code="import sys; print(sys.stdin.read().upper())", input_data="hello\nsandbox")
    assert result["stdout"] == "HELLO\nSANDBOX\n"


def test_the_spec_example_request(api):
    result = api.execute(language="python", code="print(input())", input_data="Hello Sandbox!",
                         files={"data.txt": "This is some data for the script."})
    assert (result["status"], result["stdout"], result["exit_code"]) == ("completed", "Hello Sandbox!\n", 0)


def test_input_files_nested_and_binary_arrive_byte_exact(api):
    code = (
        "import hashlib, pathlib\n"
        "print(pathlib.Path('data.txt').read_text())\n"
        "print(pathlib.Path('deep/er/notes.md').read_text())\n"
        "print(hashlib.sha256(pathlib.Path('bin/blob.dat').read_bytes()).hexdigest())\n"
    )
    files = {
        "data.txt": "plain text ✓",
        "./deep//er/notes.md": "nested",
        "bin/blob.dat": {"content": base64.b64encode(BINARY).decode(), "encoding": "base64"},
    }
    result = api.execute(language="python", code=code, files=files)
    assert result["stdout"] == f"plain text ✓\nnested\n{hashlib.sha256(BINARY).hexdigest()}\n", result
    assert result["output_files"] == {}, "unchanged inputs are not returned"


def test_output_files_text_binary_nested_round_trip(api):
    code = (
        "import pathlib\n"
        "pathlib.Path('result.txt').write_text('Script output ✓')\n"
        "pathlib.Path('out/deep').mkdir(parents=True)\n"
        "pathlib.Path('out/deep/blob.bin').write_bytes(bytes(range(256)) * 4)\n"
        "pathlib.Path('input.txt').write_text('changed')\n"
    )
    result = api.execute(language="python", code=code, files={"input.txt": "original", "kept.txt": "same"})
    files = result["output_files"]
    assert files["result.txt"] == "Script output ✓"
    assert files["input.txt"] == "changed"
    assert base64.b64decode(files["out/deep/blob.bin"]["content"]) == BINARY
    assert files["out/deep/blob.bin"]["encoding"] == "base64"
    assert "kept.txt" not in files and "main.py" not in files


@pytest.mark.parametrize("language,code", [
    ("python", "import sys; sys.exit(3)"),
    ("javascript", "process.exit(3)"),
    ("bash", "exit 3"),
])
def test_non_zero_exit_is_error_runtime_with_the_code(api, language, code):
    result = api.execute(language=language, code=code)
    assert (result["status"], result["exit_code"]) == ("error_runtime", 3)
    assert "3" in result["reason"]


def test_killed_by_signal_reports_the_signal(api):
    result = api.execute(language="bash", code="kill -SEGV $$")
    assert result["status"] == "error_runtime"
    assert result["signal"] == "SIGSEGV" and result["exit_code"] == 128 + 11


def test_wall_clock_limit_ends_as_timeout(api):
    result = api.execute(language="python", code="import time\nprint('started', flush=True)\ntime.sleep(60)", timeout_seconds=2)
    assert result["status"] == "timeout", result
    assert result["stdout"] == "started\n"
    assert result["reason"]


def test_flood_of_stdout_is_capped_and_flagged_and_server_stays_healthy(api):
    result = api.execute(language="python", code="import sys\nchunk = 'x' * 1048576\nfor _ in range(100):\n    sys.stdout.write(chunk)\n", timeout_seconds=30)
    assert result["status"] == "completed", result["reason"]
    assert result["stdout_truncated"] is True
    assert 0 < len(result["stdout"]) <= 1024 * 1024
    assert api.get("/healthz").status_code == 200
    assert api.execute(language="bash", code="echo still fine")["stdout"] == "still fine\n"


# --- not waiting, reading back, tenants ------------------------------------------------------------

def test_not_waiting_returns_202_then_the_result_by_id(api):
    response = api.post("/api/sandbox/execute", json={"language": "bash", "code": "sleep 1; echo later", "wait": False})
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert EXECUTION_ID.match(accepted["execution_id"]) and accepted["status"] in ("pending", "running")
    result = poll_until_finished(api, accepted["execution_id"])
    assert (result["status"], result["stdout"]) == ("completed", "later\n")


def test_a_finished_result_reads_back_the_same(api):
    result = api.execute(language="bash", code="echo again")
    again = api.get(f"/api/sandbox/executions/{result['execution_id']}")
    assert again.status_code == 200 and again.json() == result


def test_another_tenants_execution_is_not_found(api):
    result = api.execute(language="bash", code="echo mine")
    assert_error(api.other_tenant.get(f"/api/sandbox/executions/{result['execution_id']}"), 404)


@pytest.mark.parametrize("execution_id", ["exec-00000000000000000000", "nonsense", "x" * 300])
def test_unknown_execution_is_404(api, execution_id):
    assert_error(api.get(f"/api/sandbox/executions/{execution_id}"), 404)


# --- authentication ----------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/api/sandbox/languages", "/api/sandbox/executions/exec-00000000000000000000"])
def test_missing_key_is_401(api, path):
    assert_error(api.anonymous.get(path), 401, "missing API key")


def test_wrong_key_is_401(api):
    response = api.anonymous.post("/api/sandbox/execute", json={"language": "bash", "code": "echo"},
                                  headers={"Authorization": "Bearer sbx_not-a-real-key"})
    assert_error(response, 401, "invalid API key")
    assert response.headers["WWW-Authenticate"] == "Bearer"


# --- bad input ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../escape.txt", "a/../../b", "/etc/passwd", "..", "", "a\\b", "x\x00y", "./"])
def test_traversal_and_bad_file_names_are_400(api, name):
    assert_error(api.post("/api/sandbox/execute", json={"language": "bash", "code": "ls", "files": {name: "x"}}), 400)


@pytest.mark.parametrize("files,fragment", [
    ({"é" * 128: "x"}, "longer than 255 bytes"),
    ({"dir/" + "a" * 256: "x"}, "255"),
    ({"main.py/x": "x"}, "'main.py' cannot also be a directory"),
    ({"a": "x", "a/b": "y"}, "'a' cannot also be a directory"),
    ({"a/b/c": "x", "a/b": "y"}, "'a/b' cannot also be a directory"),
    ({"a.txt": "x", "./a.txt": "y"}, "given twice"),
    ({"d/a.txt": "x", "d//a.txt": "y"}, "given twice"),
    ({"bad\u0085name": "x"}, "control character"),
])
def test_every_name_error_is_400_with_a_message(api, files, fragment):
    response = api.post("/api/sandbox/execute", json={"language": "python", "code": "print(1)", "files": files})
    assert_error(response, 400, fragment)


def test_output_file_names_with_control_characters_are_dropped_and_flagged(api):
    code = (
        "import pathlib\n"
        "for name in ['new\\nline', 'carriage\\rreturn', 'esc\\x1b[31m', 'del\\x7f', 'c1\\x85', 'tab\\tx']:\n"
        "    pathlib.Path(name).write_text('hostile')\n"
        "pathlib.Path('fine.txt').write_text('kept')\n"
    )
    result = api.execute(language="python", code=code)
    assert result["status"] == "completed", result
    assert result["output_files"] == {"fine.txt": "kept"}
    assert result["output_files_truncated"] is True


def test_unsupported_language_is_400_with_the_specs_message(api):
    assert_error(api.post("/api/sandbox/execute", json={"language": "cobol", "code": "x"}), 400, "Unsupported language: 'cobol'")


@pytest.mark.parametrize("body,fragment", [
    ({"language": "bash", "code": "echo", "timeout_seconds": 100000}, "timeout_seconds"),
    ({"language": "bash", "code": "echo", "timeout_seconds": 0}, "timeout_seconds"),
    ({"language": "bash", "code": "echo", "max_memory_mb": 10**6}, "max_memory_mb"),
    ({"language": "bash", "code": "echo", "unknown": 1}, "unknown"),
    ({"language": "bash"}, "code"),
    ({"language": "bash", "code": "echo", "timeout_seconds": "5"}, "timeout_seconds"),
    ({"language": "bash", "code": "echo", "files": {"b.bin": {"content": "%%%", "encoding": "base64"}}}, "base64"),
    ({"language": "bash", "code": "echo", "files": {"b.bin": {"content": "", "encoding": "rot13"}}}, "encoding"),
    ({"language": "bash", "code": "echo", "files": {"main.sh": "x"}}, "main.sh"),
])
def test_invalid_requests_are_400_and_say_what_is_wrong(api, body, fragment):
    assert_error(api.post("/api/sandbox/execute", json=body), 400, fragment)


def test_malformed_json_is_400(api):
    response = api.post("/api/sandbox/execute", content=b"{not json", headers={"Content-Type": "application/json"})
    assert_error(response, 400)


def test_oversized_body_is_413(api):
    body = {"language": "bash", "code": "echo", "input_data": "x" * (2 * 1024 * 1024)}
    assert_error(api.post("/api/sandbox/execute", json=body), 413)


def test_a_request_too_large_once_stored_is_413_but_plain_text_of_the_same_length_runs(api):
    # 250 KB of '<' fits the body cap, but the API server would store each as \u003c: 1.5 MB.
    assert_error(api.post("/api/sandbox/execute", json={"language": "bash", "code": "#" + "<" * 250_000}), 413,
                 "once stored", "at most 1310720")
    assert api.execute(language="bash", code="#" + "x" * 250_000 + "\necho fits")["stdout"] == "fits\n"


HASH_STDIN_AND_FILE = """import hashlib, sys
print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())
for name in sys.argv[1:]:
    print(hashlib.sha256(open(name, "rb").read()).hexdigest())
"""


def test_a_mebibyte_of_stdin_and_files_arrives_whole(api):
    rng = random.Random(10)
    stdin = "".join(rng.choices(string.ascii_letters, k=650_000))
    blob = rng.randbytes(300_000)
    body = {"language": "python", "code": HASH_STDIN_AND_FILE, "input_data": stdin, "args": ["blob.bin"],
            "files": {"blob.bin": {"content": base64.b64encode(blob).decode(), "encoding": "base64"}}}
    assert len(json.dumps(body)) > 1024 * 1024
    result = api.execute(**body)
    assert result["status"] == "completed", result
    assert result["stdout"].split() == [hashlib.sha256(stdin.encode()).hexdigest(), hashlib.sha256(blob).hexdigest()]


def test_a_mebibyte_of_test_inputs_is_judged_whole(api):
    rng = random.Random(11)
    inputs = ["".join(rng.choices(string.ascii_letters, k=265_000)) for _ in range(4)]
    tests = [{"input": text, "expected_output": hashlib.sha256(text.encode()).hexdigest() + "\n"} for text in inputs]
    tests[2]["expected_output"] = "not the hash\n"
    assert len(json.dumps({"tests": tests})) > 1024 * 1024
    result = api.execute(language="python", code=HASH_STDIN_AND_FILE, tests=tests)
    assert result["status"] == "completed", result
    assert [test["verdict"] for test in result["tests"]] == ["passed", "passed", "wrong_answer", "passed"]


def test_oversized_chunked_body_is_413(api):
    def chunks():
        yield b'{"language": "bash", "code": "echo", "input_data": "'
        for _ in range(64):
            yield b"x" * 65536
        yield b'"}'

    response = api.post("/api/sandbox/execute", content=chunks(), headers={"Content-Type": "application/json"})
    assert "content-length" not in response.request.headers
    assert_error(response, 413)


def test_unknown_path_and_method_answer_in_the_error_shape(api):
    assert_error(api.get("/no/such/thing"), 404)
    response = api.delete("/api/sandbox/languages")
    assert_error(response, 405)
    assert "GET" in response.headers["Allow"]


# --- discovery and operations ------------------------------------------------------------------

def test_languages_lists_python_javascript_bash_with_versions(api):
    response = api.get("/api/sandbox/languages")
    assert response.status_code == 200
    languages = {entry["name"]: entry for entry in response.json()["languages"]}
    assert {"python", "javascript", "bash"} <= set(languages)
    for entry in languages.values():
        assert re.match(r"^\d+(\.\d+)*", entry["version"]), entry
    assert "js" in languages["javascript"]["aliases"]


def test_health_readiness_and_metrics(api):
    assert api.anonymous.get("/healthz").json()["status"] == "ok"
    ready = api.anonymous.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ok"
    api.execute(language="bash", code="true")
    metrics = api.anonymous.get("/metrics").text
    assert 'sandbox_executions_total{language="bash",status="completed"}' in metrics
    assert "sandbox_execution_duration_seconds_bucket" in metrics
    assert "sandbox_executions_in_flight" in metrics
    assert 'route="/api/sandbox/execute"' in metrics
    assert 'route="/no/such/thing"' not in metrics, "raw paths must not become labels"


def test_openapi_declares_responses_and_operation_ids(api):
    schema = api.get("/openapi.json").json()
    execute = schema["paths"]["/api/sandbox/execute"]["post"]
    assert execute["operationId"] == "execute_code"
    assert {"200", "202", "400", "401", "413", "429"} <= set(execute["responses"])
    assert schema["paths"]["/api/sandbox/executions/{execution_id}"]["get"]["operationId"] == "get_execution"
    assert "bearer" in str(schema["components"]["securitySchemes"]).lower()


# --- limits ------------------------------------------------------------------------------------

def test_rate_limit_is_429_with_retry_after(start_api_server):
    limited = start_api_server(rate_per_minute=1, rate_burst=3)
    statuses = [limited.get("/api/sandbox/languages").status_code for _ in range(5)]
    assert statuses[:3] == [200, 200, 200] and statuses[3:] == [429, 429]
    response = limited.get("/api/sandbox/languages")
    assert_error(response, 429, "rate limit")
    assert int(response.headers["Retry-After"]) >= 1
    assert limited.other_tenant.get("/api/sandbox/languages").status_code == 200, "limits are per key"


def test_per_key_concurrency_is_429_with_retry_after(start_api_server):
    limited = start_api_server(max_concurrent_per_key=1)
    first = limited.post("/api/sandbox/execute", json={"language": "bash", "code": "sleep 3", "wait": False})
    assert first.status_code == 202
    second = limited.post("/api/sandbox/execute", json={"language": "bash", "code": "echo"})
    assert_error(second, 429, "unfinished")
    assert second.headers["Retry-After"]
    assert limited.other_tenant.post("/api/sandbox/execute", json={"language": "bash", "code": "echo"}).status_code == 200
    poll_until_finished(limited, first.json()["execution_id"])
    # The slot frees when the server sees the end, which may trail the result becoming readable.
    deadline = time.monotonic() + 10
    while (third := limited.post("/api/sandbox/execute", json={"language": "bash", "code": "echo"})).status_code == 429:
        assert time.monotonic() < deadline, "the finished execution's slot was never released"
        time.sleep(0.1)
    assert third.status_code == 200, third.text


def test_one_key_cannot_hold_the_whole_server(start_api_server):
    limited = start_api_server(max_in_flight=4, key_share_percent=50, max_concurrent_per_key=64)
    sleeper = {"language": "bash", "code": "sleep 3", "wait": False}
    held = [limited.post("/api/sandbox/execute", json=sleeper) for _ in range(2)]
    assert [response.status_code for response in held] == [202, 202], [response.text for response in held]
    refused = limited.post("/api/sandbox/execute", json=sleeper)
    assert_error(refused, 429, "share of the server (2 of 4")
    assert int(refused.headers["Retry-After"]) >= 1
    other = limited.other_tenant.post("/api/sandbox/execute", json={"language": "bash", "code": "echo mine"})
    assert other.status_code == 200 and other.json()["stdout"] == "mine\n", other.text
    for response in held:
        poll_until_finished(limited, response.json()["execution_id"])


def test_old_results_are_dropped_beyond_the_byte_budget(start_api_server):
    # A budget smaller than any result: each finished result is forgotten (locally) or deleted (from
    # the cluster, at the key's next request) to make room; unfinished work is never dropped.
    tight = start_api_server(max_result_bytes=1, max_retained_bytes_per_key=1)
    ids = [tight.execute(language="bash", code=f"echo {index}")["execution_id"] for index in range(3)]
    deadline = time.monotonic() + 60
    while (response := tight.get(f"/api/sandbox/executions/{ids[0]}")).status_code == 200:
        assert time.monotonic() < deadline, "the oldest result was kept beyond the budget"
        time.sleep(0.2)
    assert_error(response, 404)


def test_fifty_concurrent_requests_beyond_the_cap_complete_or_get_429(start_api_server):
    limited = start_api_server(max_in_flight=6, key_share_percent=100, max_concurrent_per_key=64,
                               rate_per_minute=100000, rate_burst=1000)

    def one(index: int) -> tuple[int, dict]:
        response = limited.post("/api/sandbox/execute", json={"language": "bash", "code": f"sleep 0.2; echo {index}"})
        return response.status_code, response.json()

    with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
        outcomes = list(pool.map(one, range(50)))
    assert len(outcomes) == 50
    completed = [(index, body) for index, (status, body) in enumerate(outcomes) if status == 200]
    refused = [body for status, body in outcomes if status == 429]
    assert len(completed) + len(refused) == 50, [status for status, _ in outcomes]
    assert completed and refused, "the cap of 6 must both admit and refuse some of 50"
    for index, body in completed:
        assert (body["status"], body["stdout"]) == ("completed", f"{index}\n")
        assert limited.get(f"/api/sandbox/executions/{body['execution_id']}").json() == body
    assert all("capacity" in body["error"] for body in refused)


# --- property-based fuzzing from the server's own OpenAPI document ------------------------------

# Requests valid by the document that the server refuses, by the words of its 400, and why the
# document cannot say so (sandbox_api/openapi.py states everything else).
REFUSALS_JSON_SCHEMA_CANNOT_STATE = {
    "is given twice": "two names that are one once normalised (`a` and `./a`)",
    "cannot also be a directory": "a file that is also another file's directory: a relation of two names",
    "clashes with the code file": "a file named as the code file, whose name depends on the language",
    "has a component longer than": "a name's length in UTF-8 bytes; JSON Schema counts characters",
    "Input should be a valid integer": "an integer written with a fraction (`564.0`): a JSON Schema integer",
    "lone surrogate": "a string holding half of a UTF-16 pair: JSON Schema strings are any code points",
}
# 413: the body's bytes, or its size once stored (each <, > and & counts 6): not a length JSON Schema has.
TOO_LARGE = 413


def refused_for_what_the_document_cannot_state(response: schemathesis.Response) -> bool:
    if response.status_code == TOO_LARGE:
        return True
    error = response.json().get("error", "") if response.status_code == 400 else ""
    return any(words in error for words in REFUSALS_JSON_SCHEMA_CANNOT_STATE)


def positive_data_acceptance_as_far_as_stated(ctx, response, case):
    """positive_data_acceptance, but for the refusals above."""
    if not refused_for_what_the_document_cannot_state(response):
        positive_data_acceptance(ctx, response, case)


def negative_data_rejection_as_far_as_stated(languages: set[str]):
    def negative_data_rejection_as_far_as_stated(ctx, response, case):
        """negative_data_rejection, but for a listed language in other case or with surrounding
        whitespace (`PY`): the server matches names so, JSON Schema's `enum` only exactly."""
        language = case.body.get("language") if isinstance(case.body, dict) else None
        if not (isinstance(language, str) and language not in languages and language.strip().lower() in languages):
            negative_data_rejection(ctx, response, case)

    return negative_data_rejection_as_far_as_stated


@pytest.fixture
def fuzzing_examples() -> int:
    """Examples per operation in the fuzzing phase: schemathesis' own default."""
    return 100


def test_fuzzing_from_the_openapi_document_finds_nothing(api, fuzzing_examples):
    """`schemathesis run --checks all` with a key: every phase, valid and invalid data, every check
    (two of them narrowed to what JSON Schema can state, above)."""
    # The engine `schemathesis run` drives, not schemathesis.pytest.from_fixture: under pytest 9 that
    # fails on its own ('Function' object has no attribute '_nodeid').
    listed = api.get("/api/sandbox/languages").json()["languages"]
    languages = {name.lower() for language in listed for name in (language["name"], *language["aliases"])}
    narrowed = [positive_data_acceptance_as_far_as_stated, negative_data_rejection_as_far_as_stated(languages)]
    config = schemathesis.Config.from_dict({
        "headers": {"Authorization": api.headers["Authorization"]},
        "generation": {"mode": "all", "database": "none", "max-examples": fuzzing_examples},
        "checks": {
            "enabled": True,
            positive_data_acceptance.__name__: {"enabled": False},
            negative_data_rejection.__name__: {"enabled": False},
        },
    })
    schema = schemathesis.openapi.from_url(f"{api.base_url}/openapi.json", config=config)
    for check in narrowed:
        schemathesis.check(check)
    try:
        events = list(schemathesis.engine.from_schema(schema).execute())
    finally:
        for check in narrowed:
            CHECKS.unregister(check.__name__)
    problems = []
    for event in events:
        if isinstance(event, engine_events.ScenarioFinished):
            for checks in event.recorder.checks.values():
                problems += [describe_failure(event.phase, check) for check in checks if check.failure_info]
        elif isinstance(event, engine_events.NonFatalError):
            problems.append(f"error ({event.label}): {event.info}")
        elif isinstance(event, engine_events.FatalError):
            problems.append(f"fatal error: {event.exception!r}")
        elif isinstance(event, engine_events.EngineFinished):
            problems += [f"{failure.title}: {failure.message}" for failure in event.failures]
    assert not problems, "\n".join(problems)
    tested = {(event.phase, event.label) for event in events if isinstance(event, engine_events.ScenarioFinished)}
    assert {phase for phase, _ in tested} >= {PhaseName.COVERAGE, PhaseName.FUZZING, PhaseName.STATEFUL_TESTING}
    assert len({label for phase, label in tested if phase == PhaseName.FUZZING}) >= 6


def describe_failure(phase: PhaseName, check) -> str:
    failure = check.failure_info.failure
    return (f"{check.name} ({phase.name.lower()}): {failure.title}: {failure.message}\n"
            f"  {check.failure_info.code_sample}")


# --- test cases ---------------------------------------------------------------------------------

ADD_CPP = ("#include <iostream>\nint main() { long a, b; std::cin >> a >> b;\n"
           "  if (a == 7) for (;;) {}\n  std::cout << a + b << \"  \\n\\n\"; }\n")


def test_test_cases_compile_once_and_each_gets_a_verdict(api):
    tests = [{"name": "small", "input": "1 2\n", "expected_output": "3\n"},
             {"input": "2 2", "expected_output": "5"},  # a wrong answer
             {"name": "loops", "input": "7 0", "expected_output": "7"},  # a timeout among passing tests
             {"input": "40 2\n", "expected_output": "42"}]
    result = api.execute(language="cpp", code=ADD_CPP, tests=tests, timeout_seconds=1)
    assert result["status"] == "completed" and result["compile"]["exit_code"] == 0, result
    assert [test["verdict"] for test in result["tests"]] == ["passed", "wrong_answer", "timeout", "passed"]
    assert [test["name"] for test in result["tests"]] == ["small", None, "loops", None]
    assert result["test_summary"] == {"passed": 2, "total": 4,
                                      "first_failure": {"index": 1, "name": None, "verdict": "wrong_answer"}}
    first, _, loops, _ = result["tests"]
    assert (first["stdout"], first["exit_code"], first["limit_exceeded"]) == ("3  \n\n", 0, None)
    assert first["duration_ms"] >= 0 and first["memory_used_mb"] is not None and first["cpu_time_ms"] is not None
    assert loops["limit_exceeded"] == "wall_time" and loops["reason"] == "wall-clock limit of 1 s exceeded"
    # The run's own fields stay empty: the tests carry the runs.
    assert (result["stdout"], result["exit_code"]) == ("", None)
    assert result["limits"]["deadline_seconds"] == 20 + 4 * 1


def test_exact_comparison_counts_trailing_whitespace(api):
    tests = [{"input": "1 2", "expected_output": "3  \n\n"}, {"input": "1 2", "expected_output": "3\n"}]
    result = api.execute(language="cpp", code=ADD_CPP, tests=tests, comparison="exact")
    assert [test["verdict"] for test in result["tests"]] == ["passed", "wrong_answer"], result


# Looks for what it must never see: another test's input, and any expected output. Both are made
# of a marker (split here, so this code never holds it whole) and a random suffix. Then it leaves its
# own input in every directory and file it can write, and in System V shared memory, for the next
# test to find.
HUNT_SECRETS = r'''
import glob, os, re, stat, sys
marker = re.compile(("SECRET" + "-") .encode() + rb"(INPUT|EXPECTED)-[0-9a-f]{32}")
mine = sys.stdin.read().strip().encode()
found = set()
def look(path):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return
    with open(fd, "rb") as handle:
        if stat.S_ISREG(os.fstat(fd).st_mode):  # not a pipe or a device, which may never end
            try:
                found.update(match.group(0) for match in marker.finditer(handle.read(4 << 20)))
            except OSError:
                pass
writable = []
for root, dirs, files in os.walk("/"):
    dirs[:] = [d for d in dirs if os.path.join(root, d) not in ("/proc", "/sys", "/usr")]
    if os.access(root, os.W_OK):
        writable.append(os.path.join(root, "left-behind"))
    for name in files:
        path = os.path.join(root, name)
        look(path)
        if os.access(path, os.W_OK) and stat.S_ISREG(os.lstat(path).st_mode):
            writable.append(path)
for path in glob.glob("/proc/[0-9]*/*"):
    if path.rsplit("/", 1)[1] in ("environ", "cmdline", "mem", "maps"):
        look(path)
try:
    import ctypes
    libc = ctypes.CDLL(None)
    libc.shmat.restype = ctypes.c_void_p
    segment = libc.shmget(0x5EC, 4096, 0o600)
    if segment >= 0:
        address = libc.shmat(segment, None, 0)
        found.update(match.group(0) for match in marker.finditer(ctypes.string_at(address, 4096)))
    segment = libc.shmget(0x5EC, 4096, 0o1600)
    ctypes.memmove(libc.shmat(segment, None, 0), mine, len(mine))
except Exception as error:
    print("shm:", error, file=sys.stderr)
for path in writable:
    try:
        with open(path, "ab") as handle:
            handle.write(mine)
    except OSError:
        pass
print("left in", len(writable), "places", file=sys.stderr)
print(sorted(secret.decode() for secret in found - {mine}))
'''


def test_a_test_case_never_sees_another_tests_input_nor_any_expected_output(api):
    inputs = [f"SECRET-INPUT-{uuid.uuid4().hex}" for _ in range(3)]
    tests = [{"input": value, "expected_output": f"SECRET-EXPECTED-{uuid.uuid4().hex}"} for value in inputs]
    result = api.execute(language="python", code=HUNT_SECRETS, tests=tests, timeout_seconds=20)
    assert result["status"] == "completed", result
    for test in result["tests"]:
        assert test["exit_code"] == 0, test
        assert test["stdout"] == "[]\n", f"a test found what it must not: {test['stdout']} {test['stderr'][-500:]}"
