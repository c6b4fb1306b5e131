"""The isolation gate runs the code only once the network is cut off, and fails closed otherwise."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from importlib import resources

GATE = str(resources.files("sandbox_operator").joinpath("isolation_gate.py"))


def run_gate(tmp_path, api_port: int, wait: str = "0.5") -> subprocess.CompletedProcess:
    runner = tmp_path / "runner.py"
    runner.write_text("import sys; print('runner ran with', sys.argv[1])\n")
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(api_port)}
    return subprocess.run([sys.executable, "-I", GATE, wait, str(runner), "spec.json"],
                          env=env, capture_output=True, text=True, timeout=30)


def test_network_still_open_means_error_setup_and_the_code_never_runs(tmp_path):
    with socket.socket() as api_server:  # stands in for the API server the pod must not reach
        api_server.bind(("127.0.0.1", 0))
        api_server.listen(16)
        completed = run_gate(tmp_path, api_server.getsockname()[1])
    assert "runner ran" not in completed.stdout
    marker, document = completed.stdout.strip().split(" ", 1)
    assert marker == "@@sandbox-result@@"
    result = json.loads(document)
    assert result["status"] == "error_setup" and "network was still open" in result["reason"]


def test_network_cut_off_hands_over_to_the_runner(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]  # bound but not listening: connections are refused
        completed = run_gate(tmp_path, closed_port)
    assert completed.stdout == "runner ran with spec.json\n"
