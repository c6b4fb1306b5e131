"""Benchmark of the local backend: execute latency vs a bare interpreter start, and throughput.

Starts its own API server (local backend), then prints markdown tables:
  1. p50/p95 of POST /api/sandbox/execute for hello-world per language, next to p50/p95 of a bare
     start of the same interpreter the sandbox runs, and the ratio of the p50s;
  2. where the python time goes: bubblewrap alone, bubblewrap + runner around `true`, the same
     around the hello-world program (no HTTP, no cgroup);
  3. executions per second at concurrency 1, 4 and 16, with the failure count;
  4. compile + run of hello-world in C++ and Java next to the bare toolchain (the catalogue's commands
     and flags, run directly in a temporary directory), and the ratio of the p50s;
  5. the judge workload: one C++ solution with 20 test cases in one request, its per-test overhead
     against a bare loop running the compiled binary once per case.
Prints numbers; asserts nothing.
Usage: bench/run.py [--samples N] [--requests-per-worker N] [--compile-samples N] [--judge-samples N]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

import httpx

from common import MEMORY_MB, compiled_figures, free_port, percentile, wait_http

from sandbox_api.auth import digest, generate_key
from sandbox_api.backends.bubblewrap import DataFds, bwrap_argv, prepare_host
from sandbox_contract.catalogue import load_catalogue
from sandbox_contract.request import ExecutionLimits, resolve_request
from sandbox_contract.runner_spec import build_runner_spec, sandbox_environment

HELLO = {
    "python": ("print('hello')", "main.py", ["/usr/bin/python3"]),
    "javascript": ("console.log('hello')", "main.js", ["/usr/bin/node"]),
    "bash": ("echo hello", "main.sh", ["/usr/bin/bash"]),
}


def timed_ms(argv, samples: int, *, stdin: bytes = b"", env: dict[str, str] | None = None) -> list[float]:
    """Wall time of each of `samples` runs of `argv`, or of `argv(fds)` with a fresh DataFds each run
    (bubblewrap consumes the descriptors it copies the sandbox's files from)."""
    timings = []
    for _ in range(samples):
        fds = DataFds.open(HOST) if callable(argv) else None
        command = argv(fds) if fds else argv
        started = time.perf_counter()
        subprocess.run(command, input=stdin, env=env, check=True, stdout=subprocess.DEVNULL,
                       pass_fds=fds.all() if fds else ())
        timings.append((time.perf_counter() - started) * 1000)
        if fds:
            fds.close()
    return timings


def bare_start_ms(language: str, samples: int) -> list[float]:
    """Starting the interpreter on the hello-world file, as the sandbox does, without the sandbox.

    With the sandbox's clean environment: the host's (NODE_EXTRA_CA_CERTS, for one) can slow a start.
    """
    code, main_file, argv = HELLO[language]
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory, main_file)
        path.write_text(code)
        return timed_ms([*argv, str(path)], samples, env=sandbox_environment(directory))


HOST = prepare_host(Path(str(resources.files("sandbox_runner").joinpath("runner.py"))))


def sandbox_breakdown(samples: int) -> list[tuple[str, list[float]]]:
    """The sandbox's layers, timed without HTTP, cgroup or warm pool (bubblewrap started as root)."""
    def runner(fds: DataFds) -> list[str]:
        return bwrap_argv(fds, workdir="/sandbox/work")

    def bare_bwrap(fds: DataFds) -> list[str]:
        argv = runner(fds)
        return argv[: argv.index("--")] + ["--", "true"]

    request = resolve_request(catalogue=load_catalogue(), limits=ExecutionLimits(), language="python",
                              code="print('hello')", stdin=None, files=[],
                              requested_limits={"timeout_seconds": 10, "max_memory_mb": MEMORY_MB})
    spec = build_runner_spec(request)
    spec_true = {**spec, "command": ["true"]}
    return [
        ("bubblewrap running `true`", timed_ms(bare_bwrap, samples)),
        ("bubblewrap + runner running `true`", timed_ms(runner, samples, stdin=json.dumps(spec_true).encode())),
        ("bubblewrap + runner running hello.py", timed_ms(runner, samples, stdin=json.dumps(spec).encode())),
    ]


def start_server(keys_file: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "SANDBOX_BACKEND": "local", "SANDBOX_API_KEYS_FILE": str(keys_file),
           "SANDBOX_RATE_PER_MINUTE": "1000000", "SANDBOX_RATE_BURST": "100000",
           "SANDBOX_MAX_CONCURRENT_PER_KEY": "64", "SANDBOX_MAX_IN_FLIGHT": "128", "SANDBOX_LOG_LEVEL": "warning"}
    server = subprocess.Popen([sys.executable, "-m", "sandbox_api", "--port", str(port)], env=env)
    base_url = f"http://127.0.0.1:{port}"
    wait_http(f"{base_url}/readyz", server, "the API server")
    return server, base_url


def execute(client: httpx.Client, language: str) -> tuple[float, bool]:
    started = time.perf_counter()
    response = client.post("/api/sandbox/execute", json={"language": language, "code": HELLO[language][0]})
    elapsed = (time.perf_counter() - started) * 1000
    ok = response.status_code == 200 and response.json()["stdout"] == "hello\n"
    return elapsed, ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--requests-per-worker", type=int, default=10)
    parser.add_argument("--compile-samples", type=int, default=8, help="samples of each compiled hello-world")
    parser.add_argument("--judge-samples", type=int, default=5, help="judge requests (20 test cases each)")
    args = parser.parse_args()
    key = generate_key()
    with tempfile.TemporaryDirectory() as directory:
        keys_file = Path(directory, "keys")
        keys_file.write_text(f"bench:{digest(key)}\n")
        server, base_url = start_server(keys_file)
        try:
            with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=120,
                              limits=httpx.Limits(max_connections=32)) as client:
                for language in HELLO:  # warm the page cache and the server
                    execute(client, language)
                print(f"## Latency of hello-world ({args.samples} samples each, sequential)\n")
                print("| language | API p50 ms | API p95 ms | bare start p50 ms | bare start p95 ms | ratio of p50s | failures |")
                print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
                for language in HELLO:
                    results = [execute(client, language) for _ in range(args.samples)]
                    api_ms = [elapsed for elapsed, _ in results]
                    bare_ms = bare_start_ms(language, args.samples)
                    failures = sum(not ok for _, ok in results)
                    print(f"| {language} | {percentile(api_ms, .5):.1f} | {percentile(api_ms, .95):.1f} | "
                          f"{percentile(bare_ms, .5):.1f} | {percentile(bare_ms, .95):.1f} | "
                          f"{percentile(api_ms, .5) / percentile(bare_ms, .5):.2f} | {failures} |")
                print("\n## Where the python time goes (no HTTP, no cgroup)\n")
                print("| layer | p50 ms | p95 ms |")
                print("| --- | ---: | ---: |")
                for label, timings in sandbox_breakdown(args.samples):
                    print(f"| {label} | {percentile(timings, .5):.1f} | {percentile(timings, .95):.1f} |")
                print(f"\n## Throughput, python hello-world ({args.requests_per_worker} requests per worker)\n")
                print("| concurrency | executions/s | p50 ms | p95 ms | failures |")
                print("| ---: | ---: | ---: | ---: | ---: |")
                for concurrency in (1, 4, 16):
                    total = concurrency * args.requests_per_worker
                    started = time.perf_counter()
                    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
                        results = list(pool.map(lambda _: execute(client, "python"), range(total)))
                    seconds = time.perf_counter() - started
                    latencies = [elapsed for elapsed, _ in results]
                    print(f"| {concurrency} | {total / seconds:.1f} | {statistics.median(latencies):.1f} | "
                          f"{percentile(latencies, .95):.1f} | {sum(not ok for _, ok in results)} |")
                print()
                compiled_figures(client, compile_samples=args.compile_samples, judge_samples=args.judge_samples)
        finally:
            server.terminate()
            server.wait(timeout=20)
    print(f"\nmachine: {os.cpu_count()} CPUs; load average at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
