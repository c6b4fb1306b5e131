"""What both benchmarks share: percentiles, a free port, waiting for a server, and the compiled-language
figures (hello-world compile + run, the judge workload) measured through an API next to the bare toolchain
on this machine, with the catalogue's own commands, variables and flags.

Numbers only: nothing here asserts.
"""

from __future__ import annotations

import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from sandbox_contract.catalogue import Language, load_catalogue
from sandbox_contract.runner_spec import sandbox_environment

# The memory limit both the requests and the bare toolchain use ({memory_mb} in the catalogue: the JVM's MaxRAM).
MEMORY_MB = 256
COMPILED_HELLO = {
    "cpp": '#include <cstdio>\nint main() { std::puts("hello"); return 0; }\n',
    "java": 'public class Main {\n    public static void main(String[] args) {\n'
            '        System.out.println("hello");\n    }\n}\n',
}
JUDGE_LANGUAGE = "cpp"
JUDGE_SOLUTION = ('#include <iostream>\nint main() { long long a, b; std::cin >> a >> b; '
                  'std::cout << a + b << "\\n"; return 0; }\n')
JUDGE_TESTS = 20


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, process: subprocess.Popen, what: str, timeout: float = 60) -> None:
    """Until `url` answers 200; exits the benchmark if `process` dies or the time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"{what} exited early (exit code {process.returncode})")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    sys.exit(f"{what} did not get ready within {timeout:.0f} s")


def judge_tests(seed: int = 7) -> list[dict]:
    """The judge workload's test cases: two integers in, their sum out."""
    rng = random.Random(seed)
    cases = []
    for index in range(JUDGE_TESTS):
        a, b = rng.randint(-10**9, 10**9), rng.randint(-10**9, 10**9)
        cases.append({"name": f"case-{index}", "input": f"{a} {b}\n", "expected_output": f"{a + b}\n"})
    return cases


# --- the bare toolchain ---------------------------------------------------------------------------------


class BareToolchain:
    """A language's compile and run commands from the catalogue, run directly in a temporary directory
    with the sandbox's environment (and the catalogue's variables), no sandbox around them."""

    def __init__(self, language: Language):
        self.language = language

    def _run(self, argv: list[str], directory: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
        main_path = str(Path(directory, self.language.main_file))
        env = {**self.language.environment(main_path, MEMORY_MB), **sandbox_environment(directory)}
        return subprocess.run(argv, input=stdin, cwd=directory, env=env, check=True, capture_output=True)

    def compile(self, directory: str, code: str) -> float:
        """Writes the code into `directory` and compiles it there; the compile's wall time in ms."""
        main_path = str(Path(directory, self.language.main_file))
        Path(main_path).write_text(code)
        argv = self.language.compile_argv(main_path, MEMORY_MB)
        started = time.perf_counter()
        if argv:
            self._run(argv, directory)
        return (time.perf_counter() - started) * 1000

    def run(self, directory: str, stdin: bytes = b"") -> tuple[float, bytes]:
        """Runs the compiled program once; (wall time in ms, stdout)."""
        argv = self.language.run_argv(str(Path(directory, self.language.main_file)), MEMORY_MB)
        started = time.perf_counter()
        done = self._run(argv, directory, stdin)
        return (time.perf_counter() - started) * 1000, done.stdout

    def compile_and_run_ms(self, code: str) -> float:
        """Hello-world as a sandbox does it: compile in a fresh directory, then run once."""
        with tempfile.TemporaryDirectory(prefix="bench-bare-") as directory:
            compiled = self.compile(directory, code)
            ran, _ = self.run(directory)
            return compiled + ran

    def judge_loop(self, code: str, cases: list[dict]) -> tuple[float, float]:
        """Compile once, then run the binary once per case with its input on stdin; (compile ms, loop ms).
        A wrong output exits the benchmark: the comparison would be meaningless."""
        with tempfile.TemporaryDirectory(prefix="bench-judge-") as directory:
            compiled = self.compile(directory, code)
            started = time.perf_counter()
            for case in cases:
                _, stdout = self.run(directory, case["input"].encode())
                if stdout.decode() != case["expected_output"]:
                    sys.exit(f"the bare judge loop printed {stdout!r} for {case['input']!r}")
            return compiled, (time.perf_counter() - started) * 1000


def bare_toolchains() -> dict[str, BareToolchain]:
    catalogue = load_catalogue()
    return {name: BareToolchain(catalogue.languages[name]) for name in (*COMPILED_HELLO, JUDGE_LANGUAGE)}


# --- through the API ------------------------------------------------------------------------------------


def post_execute(client: httpx.Client, body: dict) -> tuple[float, dict | None]:
    """(wall time of POST /api/sandbox/execute in ms, the result; None unless a 200)."""
    started = time.perf_counter()
    response = client.post("/api/sandbox/execute", json={"max_memory_mb": MEMORY_MB, **body})
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        print(f"<!-- {body['language']}: HTTP {response.status_code} {response.text[:300]} -->", file=sys.stderr)
        return elapsed, None
    return elapsed, response.json()


def compiled_hello_table(client: httpx.Client, samples: int, bare: dict[str, BareToolchain],
                         *, title: str, unit_note: str = "") -> str:
    """Markdown: hello-world compile + run through the API vs the bare toolchain, interleaved sample by
    sample so drift in the machine's load hits both."""
    lines = [f"## Compile + run of hello-world ({samples} samples each, sequential, interleaved){title}\n",
             "| language | API p50 ms | API p95 ms | API compile p50 ms | bare compile+run p50 ms | "
             "bare p95 ms | ratio of p50s | failures |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, code in COMPILED_HELLO.items():
        api_ms, compile_ms, bare_ms, failures = [], [], [], 0
        for _ in range(samples):
            elapsed, result = post_execute(client, {"language": name, "code": code})
            if result is None or result["stdout"] != "hello\n" or result["status"] != "completed":
                failures += 1
                if result is not None:
                    print(f"<!-- {name}: {result['status']} {result.get('reason')} "
                          f"{(result.get('compile') or {}).get('stderr', '')[:300]!r} -->", file=sys.stderr)
            else:
                api_ms.append(elapsed)
                compile_ms.append((result.get("compile") or {}).get("duration_ms") or 0)
            bare_ms.append(bare[name].compile_and_run_ms(code))
        if not api_ms:
            lines.append(f"| {name} | – | – | – | {percentile(bare_ms, .5):.0f} | {percentile(bare_ms, .95):.0f} "
                         f"| – | {failures} |")
            continue
        lines.append(f"| {name} | {percentile(api_ms, .5):.0f} | {percentile(api_ms, .95):.0f} | "
                     f"{percentile(compile_ms, .5):.0f} | {percentile(bare_ms, .5):.0f} | "
                     f"{percentile(bare_ms, .95):.0f} | {percentile(api_ms, .5) / percentile(bare_ms, .5):.2f} | "
                     f"{failures} |")
    if unit_note:
        lines.append(f"\n{unit_note}")
    return "\n".join(lines)


def judge_table(client: httpx.Client, samples: int, bare: BareToolchain, *, title: str = "") -> str:
    """Markdown: one C++ solution with JUDGE_TESTS test cases in one request vs the bare loop (compile once,
    run the binary once per case). Per-test overhead = (total - compile) / tests - bare per-run time; the
    marginal cost of a case, free of the fixed cost (HTTP, the sandbox's start, a pod's), comes from the same
    request with one case."""
    cases = judge_tests()
    rows: dict[str, list[float]] = {key: [] for key in (
        "total", "compile", "per_test", "in_sandbox", "marginal", "bare_compile", "bare_run")}
    failures = 0
    for _ in range(samples):
        elapsed, result = judge_request(client, cases)
        # The same with one case: what the second to the last case add, whatever the fixed cost (a pod start).
        elapsed_one, result_one = judge_request(client, cases[:1])
        bare_compile, bare_loop = bare.judge_loop(JUDGE_SOLUTION, cases)
        if result is None or result_one is None:
            failures += 1
            continue
        compile_ms = result["compile"]["duration_ms"] or 0
        per_test = (elapsed - compile_ms) / len(cases)
        marginal = ((elapsed - compile_ms) - (elapsed_one - (result_one["compile"]["duration_ms"] or 0))) / (len(cases) - 1)
        bare_run = bare_loop / len(cases)
        for key, value in (("total", elapsed), ("compile", compile_ms), ("per_test", per_test),
                           ("in_sandbox", sum(test["duration_ms"] or 0 for test in result["tests"]) / len(cases)),
                           ("marginal", marginal), ("bare_compile", bare_compile), ("bare_run", bare_run)):
            rows[key].append(value)
    lines = [f"## Judge workload: one C++ solution, {len(cases)} test cases in one request "
             f"({samples} samples, each a {len(cases)}-case and a 1-case request; medians){title}\n"]
    if not rows["total"]:
        lines.append(f"every request failed ({failures} failures)")
        return "\n".join(lines)
    median = {key: statistics.median(values) for key, values in rows.items()}
    # From the medians shown, so the table adds up.
    overhead, ratio = median["per_test"] - median["bare_run"], median["per_test"] / median["bare_run"]
    bare_total = median["bare_compile"] + median["bare_run"] * len(cases)
    lines += [
        "| measure | API | bare loop |",
        "| --- | ---: | ---: |",
        f"| total ms | {median['total']:.0f} | {bare_total:.0f} |",
        f"| compile ms (API: result.compile.duration_ms) | {median['compile']:.0f} | {median['bare_compile']:.0f} |",
        f"| per test ms: (total − compile) / {len(cases)}; bare: one run | {median['per_test']:.1f} | "
        f"{median['bare_run']:.1f} |",
        f"| **per-test overhead ms** (API per test − bare per run) | **{overhead:.1f}** | |",
        f"| ratio per test API / bare | {ratio:.2f} | |",
        f"| ratio total API / bare | {median['total'] / bare_total:.2f} | |",
        f"| per test ms inside the sandbox (mean of tests[].duration_ms) | {median['in_sandbox']:.1f} | – |",
        f"| marginal per test ms: ((total − compile) of {len(cases)} cases − the same of 1) / {len(cases) - 1} "
        f"| {median['marginal']:.1f} | {median['bare_run']:.1f} |",
        f"| marginal per-test overhead ms (marginal − bare per run) | {median['marginal'] - median['bare_run']:.1f} | |",
        f"| failures | {failures} | |",
    ]
    return "\n".join(lines)


def judge_request(client: httpx.Client, cases: list[dict]) -> tuple[float, dict | None]:
    """POST the judge solution with `cases`; (ms, result), the result None unless every case passed."""
    elapsed, result = post_execute(client, {"language": JUDGE_LANGUAGE, "code": JUDGE_SOLUTION, "tests": cases})
    summary = (result or {}).get("test_summary") or {}
    if result is not None and (summary.get("passed") != len(cases) or not result.get("compile")):
        print(f"<!-- judge: {result['status']} {result.get('reason')} summary {summary} -->", file=sys.stderr)
        return elapsed, None
    return elapsed, result


def compiled_figures(client: httpx.Client, *, compile_samples: int, judge_samples: int, title: str = "",
                     note: str = "") -> None:
    """Warms the toolchains (page cache, images) once, then prints both tables (a count of 0 skips one)."""
    bare = bare_toolchains()
    for name, code in COMPILED_HELLO.items():
        post_execute(client, {"language": name, "code": code})
        bare[name].compile_and_run_ms(code)
    if compile_samples:
        print(compiled_hello_table(client, compile_samples, bare, title=title, unit_note=note))
        print()
    if judge_samples:
        print(judge_table(client, judge_samples, bare[JUDGE_LANGUAGE], title=title))
