"""Runs first in every sandbox pod: waits until the pod's network is cut off, then becomes the runner.

NetworkPolicy enforcers program a new pod's rules a moment after it starts (kube-router: about a
second), so untrusted code must not start before then. The gate connects to the API server's service
address, which every pod is given: while that succeeds, the policy is not in effect yet. If it never
takes effect, the gate prints an `error_setup` result instead of running the code (fail closed).

Standard library only; shipped in the ConfigMap next to the runner. Usage:
    python3 -I isolation_gate.py WAIT_SECONDS RUNNER_PATH SPEC_PATH
"""

import json
import os
import socket
import sys
import time

MARKER = "@@sandbox-result@@ "


def reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.5).close()
        return True
    except OSError:
        return False


def main() -> None:
    wait_seconds, runner, spec = float(sys.argv[1]), sys.argv[2], sys.argv[3]
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = int(os.environ.get("KUBERNETES_SERVICE_PORT", "443"))
    deadline = time.monotonic() + wait_seconds
    while host and reachable(host, port):
        if time.monotonic() >= deadline:
            reason = (f"the sandbox's network was still open after {wait_seconds:g} s (is a NetworkPolicy "
                      "enforcer running?); the code was not run")
            print(MARKER + json.dumps({"status": "error_setup", "reason": reason, "exit_code": None}), flush=True)
            sys.exit(0)
        time.sleep(0.1)
    os.execv(sys.executable, [sys.executable, "-I", runner, spec])


if __name__ == "__main__":
    main()
