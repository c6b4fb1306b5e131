"""Cluster benchmark: POST -> result through the API's Kubernetes backend vs a bare Job.

Prints numbers; asserts nothing. Needs the local cluster (`make cluster-up`). Starts its own operator
and API server on the host, in a fresh namespace that is deleted at the end. Besides python hello-world
against a bare Job, it prints compile + run of C++ and Java hello-world and the judge workload (one C++
solution, 20 test cases in one request) through the cluster, next to the same bare toolchain on the host
(a sandbox pod is limited to one CPU; the host's toolchain is not).

    .venv/bin/python bench/cluster_bench.py [--runs 20] [--throughput 100] [--in-flight 20]
        [--compile-samples 3] [--judge-samples 2]    (0 skips a figure)
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from common import compiled_figures, free_port, percentile, wait_http

from sandbox_api.auth import digest, generate_key

CLUSTER_DIR = Path(os.environ.get("SANDBOX_CLUSTER_DIR", "/var/lib/sandbox-cluster"))
KUBECONFIG = str(CLUSTER_DIR / "kubeconfig")
KUBECTL = [str(CLUSTER_DIR / "bin" / "kubectl"), "--kubeconfig", KUBECONFIG]
REPO = Path(__file__).resolve().parents[1]
IMAGE = "localhost/sandbox/python:3.11-bookworm"
HELLO = "print('hello')"


def kubectl(*args: str) -> str:
    return subprocess.run([*KUBECTL, *args], check=True, capture_output=True, text=True).stdout


def bare_job_seconds(namespace: str, index: int) -> float:
    """`kubectl create job` + `kubectl wait`, the same image and program, no operator involved."""
    name = f"bare-{index}"
    start = time.monotonic()
    kubectl("create", "job", name, "-n", namespace, f"--image={IMAGE}", "--", "python3", "-c", HELLO)
    kubectl("wait", "-n", namespace, "--for=condition=Complete", f"job/{name}", "--timeout=300s")
    elapsed = time.monotonic() - start
    kubectl("delete", "job", name, "-n", namespace, "--wait=false")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="sequential runs for each latency figure")
    parser.add_argument("--throughput", type=int, default=100, help="executions for the throughput figure")
    parser.add_argument("--in-flight", type=int, default=20, help="concurrent executions for the throughput figure")
    parser.add_argument("--compile-samples", type=int, default=3, help="sequential runs of each compiled hello-world")
    parser.add_argument("--judge-samples", type=int, default=2, help="judge requests (20 test cases each)")
    args = parser.parse_args()

    namespace = f"sbxbench-{uuid.uuid4().hex[:8]}"
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "charts" / "code-sandbox" / "crds" / "sandboxexecutions.yaml"))
    kubectl("create", "namespace", namespace)
    workdir = Path(tempfile.mkdtemp(prefix="cluster-bench-"))
    key = generate_key()
    (workdir / "keys").write_text(f"bench:{digest(key)}\n")
    env = {**os.environ, "KUBECONFIG": KUBECONFIG}
    operator_port, api_port = free_port(), free_port()
    processes = []
    try:
        operator = subprocess.Popen(
            [sys.executable, "-m", "sandbox_operator", "--log-format", "plain",
             "--liveness", f"http://127.0.0.1:{operator_port}/healthz"],
            # 25m CPU requested per sandbox, so 20 in flight fit on the 2-CPU development node.
            env={**env, "SANDBOX_NAMESPACES": namespace, "SANDBOX_METRICS_PORT": str(free_port()),
                 "SANDBOX_CPU_REQUEST": "25m"},
            stdout=(workdir / "operator.log").open("wb"), stderr=subprocess.STDOUT,
        )
        processes.append(operator)
        wait_http(f"http://127.0.0.1:{operator_port}/healthz", operator, "the operator")
        api = subprocess.Popen(
            [sys.executable, "-m", "sandbox_api", "--host", "127.0.0.1", "--port", str(api_port)],
            env={**env, "SANDBOX_BACKEND": "kubernetes", "SANDBOX_KUBERNETES_NAMESPACE": namespace,
                 "SANDBOX_API_KEYS_FILE": str(workdir / "keys"), "SANDBOX_RATE_PER_MINUTE": "100000",
                 "SANDBOX_RATE_BURST": "10000", "SANDBOX_MAX_CONCURRENT_PER_KEY": "64"},
            stdout=(workdir / "api.log").open("wb"), stderr=subprocess.STDOUT,
        )
        processes.append(api)
        wait_http(f"http://127.0.0.1:{api_port}/readyz", api, "the API server")
        client = httpx.Client(base_url=f"http://127.0.0.1:{api_port}", headers={"Authorization": f"Bearer {key}"},
                              timeout=300)

        def execute() -> float:
            start = time.monotonic()
            response = client.post("/api/sandbox/execute", json={"language": "python", "code": HELLO})
            elapsed = time.monotonic() - start
            if response.status_code != 200 or response.json()["status"] != "completed":
                raise RuntimeError(f"execution failed: {response.status_code} {response.text[:300]}")
            return elapsed

        if args.runs:
            execute()  # warm-up: NetworkPolicy creation, connection pools
            bare_job_seconds(namespace, 0)
            ours, bare = [], []
            for index in range(1, args.runs + 1):  # interleaved, so drift in the machine's load hits both
                ours.append(execute())
                bare.append(bare_job_seconds(namespace, index))
            print(f"python hello-world, {args.runs} sequential runs each (seconds)")
            print(f"{'path':<34}{'p50':>8}{'p95':>8}{'mean':>8}")
            for label, samples in (("API -> SandboxExecution -> result", ours), ("bare Job (kubectl create+wait)", bare)):
                print(f"{label:<34}{percentile(samples, 0.5):>8.2f}{percentile(samples, 0.95):>8.2f}"
                      f"{statistics.mean(samples):>8.2f}")
            print(f"ratio p50 ours/bare: {percentile(ours, 0.5) / percentile(bare, 0.5):.2f}  "
                  f"p95: {percentile(ours, 0.95) / percentile(bare, 0.95):.2f}")
        if args.throughput:
            start = time.monotonic()
            failures = 0
            with concurrent.futures.ThreadPoolExecutor(max_workers=args.in_flight) as pool:
                for outcome in [pool.submit(execute) for _ in range(args.throughput)]:
                    try:
                        outcome.result()
                    except RuntimeError:
                        failures += 1
            throughput = args.throughput / (time.monotonic() - start)
            print(f"throughput: {throughput:.2f} executions/s with {args.in_flight} in flight "
                  f"({args.throughput} executions, {failures} failed)")
        if args.compile_samples or args.judge_samples:
            print()
            compiled_figures(client, compile_samples=args.compile_samples, judge_samples=args.judge_samples,
                             title=", through the cluster",
                             note="API: POST -> SandboxExecution -> Job -> result, the pod start included; "
                                  "bare: the catalogue's commands on the host, outside any pod.")
        print(f"\nmachine: {os.cpu_count()} CPUs; load average at the end {os.getloadavg()[0]:.2f}")
    finally:
        # While the operator still runs, so it can release its finalizers on the executions.
        subprocess.run([*KUBECTL, "delete", "sbx", "--all", "-n", namespace, "--timeout=120s"], capture_output=True)
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)
        subprocess.run([*KUBECTL, "delete", "namespace", namespace, "--wait=false"], capture_output=True)
        print(f"logs: {workdir}")


if __name__ == "__main__":
    main()
