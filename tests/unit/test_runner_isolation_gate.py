"""The runner's isolation gate (--isolation-wait) runs the code only on positive evidence that the
network is cut off.

Destinations are plain local sockets: a listening socket is an open network; a bound socket that does
not listen is a closed port (the kernel answers with a reset); a listening socket whose accept queue
is full drops every new connection, as a DROP rule does; a REJECT rule in a private network
namespace answers with ICMP, as kube-router's policies do.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from sandbox_runner import RESULT_MARKER, RUNNER_PATH, read_result, runner_command

CODE_RAN = "the code ran\n"


@contextmanager
def destination(kind: str) -> Iterator[int]:
    """A local port that is `open`, `closed` (reset) or `dropping` (no answer)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        port = server.getsockname()[1]
        if kind == "closed":
            yield port
            return
        server.listen(0)
        if kind == "open":
            yield port
            return
        with socket.create_connection(("127.0.0.1", port)):  # fills the accept queue: later SYNs are dropped
            yield port


def gate_env(api_port: int, kubelet_port: int, **overrides: str) -> dict[str, str]:
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(api_port),
           "SANDBOX_NODE_IP": "127.0.0.1", "SANDBOX_KUBELET_PORT": str(kubelet_port), **overrides}
    return {name: value for name, value in env.items() if value is not None}


def run_gated(tmp_path, env: dict[str, str], *, wait: int | str = 2, prefix: tuple[str, ...] = ()) -> dict:
    """The result document of the runner started behind its gate, on a spec whose code prints CODE_RAN
    (a str `wait` reaches the runner as written: what a broken caller could pass)."""
    spec = {"command": [sys.executable, "-c", f"print({CODE_RAN.strip()!r})"], "workdir": str(tmp_path / "work"),
            "timeout_seconds": 30, "env": {"PATH": "/usr/bin:/bin"}}
    command = runner_command(str(RUNNER_PATH), "-", python=sys.executable, isolation_wait_seconds=wait)
    completed = subprocess.run([*prefix, *command], input=json.dumps(spec), env=env, capture_output=True,
                               text=True, timeout=60)
    assert completed.returncode == 0 and completed.stdout.count("\n") == 1, completed.stdout + completed.stderr
    assert completed.stdout.startswith(RESULT_MARKER)
    return read_result(completed.stdout)


def refused_reason(result: dict) -> str:
    """The reason of the gate's error_setup result; fails if the code ran."""
    assert result["status"] == "error_setup" and result["reason"].endswith("the code was not run"), result
    assert (result["exit_code"], result["memory_used_mb"], result["stdout"]) == (None, None, "")  # never started
    return result["reason"]


def assert_code_ran(result: dict) -> None:
    assert (result["status"], result["stdout"]) == ("completed", CODE_RAN), result


@pytest.mark.parametrize("api, kubelet", [
    ("open", "open"),
    ("closed", "closed"),  # a closed port refuses too: the host answered, so the path is open
    ("dropping", "open"),
    ("open", "dropping"),
    ("dropping", "closed"),
])
def test_network_not_shown_to_be_cut_off_means_error_setup(tmp_path, api, kubelet):
    with destination(api) as api_port, destination(kubelet) as kubelet_port:
        reason = refused_reason(run_gated(tmp_path, gate_env(api_port, kubelet_port), wait=1))
    assert "not shown to be cut off within 1 s" in reason
    assert f"127.0.0.1:{api_port} " in reason and f"127.0.0.1:{kubelet_port} " in reason


def test_every_destination_dropped_lets_the_code_run(tmp_path):
    with destination("dropping") as api_port, destination("dropping") as kubelet_port:
        assert_code_ran(run_gated(tmp_path, gate_env(api_port, kubelet_port)))


@pytest.mark.parametrize("overrides, message", [
    ({"KUBERNETES_SERVICE_HOST": None}, "KUBERNETES_SERVICE_HOST must be an IP address, got ''"),
    ({"SANDBOX_NODE_IP": None}, "SANDBOX_NODE_IP must be an IP address, got ''"),
    ({"SANDBOX_NODE_IP": "node.example"}, "SANDBOX_NODE_IP must be an IP address, got 'node.example'"),
    ({"SANDBOX_KUBELET_PORT": None}, "SANDBOX_KUBELET_PORT must be a port number, got ''"),
    ({"KUBERNETES_SERVICE_PORT": "0"}, "KUBERNETES_SERVICE_PORT must be a port number, got '0'"),
])
def test_a_missing_or_malformed_destination_never_lets_code_run(tmp_path, overrides, message):
    with destination("dropping") as api_port, destination("dropping") as kubelet_port:
        reason = refused_reason(run_gated(tmp_path, gate_env(api_port, kubelet_port, **overrides)))
    assert message in reason


@pytest.mark.parametrize("wait", ["soon", "0", "-5", "nan", "inf"])
def test_a_bad_wait_argument_never_lets_code_run(tmp_path, wait):
    with destination("dropping") as api_port, destination("dropping") as kubelet_port:
        reason = refused_reason(run_gated(tmp_path, gate_env(api_port, kubelet_port), wait=wait))
    assert f"--isolation-wait must be a positive number of seconds, got {wait!r}" in reason


ISOLATED_NETNS = os.geteuid() == 0 and shutil.which("unshare") and shutil.which("iptables") and shutil.which("ip")


@pytest.mark.skipif(not ISOLATED_NETNS, reason="needs root, unshare, ip and iptables for a private network namespace")
@pytest.mark.parametrize("rule", ["REJECT", "REJECT --reject-with icmp-admin-prohibited"])
def test_icmp_rejections_to_both_destinations_let_the_code_run(tmp_path, rule):
    """In a network namespace of its own, an iptables REJECT answers both ports with ICMP, as a policy does."""
    setup = f"ip link set lo up && iptables -A OUTPUT -p tcp -m multiport --dports 443,10250 -j {rule} && exec \"$@\""
    assert_code_ran(run_gated(tmp_path, gate_env(443, 10250), prefix=("unshare", "--net", "sh", "-c", setup, "sh")))


@pytest.mark.skipif(not ISOLATED_NETNS, reason="needs root, unshare, ip and iptables for a private network namespace")
def test_icmp_rejection_of_one_destination_is_not_enough(tmp_path):
    """The kubelet port rejected, the API server's port merely closed (a reset): not shown isolated."""
    setup = "ip link set lo up && iptables -A OUTPUT -p tcp --dport 10250 -j REJECT && exec \"$@\""
    reason = refused_reason(run_gated(tmp_path, gate_env(443, 10250), wait=1,
                                      prefix=("unshare", "--net", "sh", "-c", setup, "sh")))
    assert "127.0.0.1:443 Connection refused (reset)" in reason and "127.0.0.1:10250 blocked" in reason
