"""Runs first in every sandbox pod: starts the runner only on positive evidence that the pod's network
is cut off, and otherwise prints an `error_setup` result line without running the code (fail closed).

NetworkPolicy enforcers program a new pod's rules a moment after it starts (kube-router: about a
second), so untrusted code must not start before then. The gate probes two destinations that are
known to listen for every running pod: the API server's Service (KUBERNETES_SERVICE_HOST/PORT, which
the kubelet gives every pod) and the kubelet of the pod's own node (SANDBOX_NODE_IP, the downward
API's status.hostIP, port SANDBOX_KUBELET_PORT). Each attempt is classified:

- connected: the network is open;
- refused by a TCP reset: the destination's host answered, so the path to it is open too (this is
  what a closed port looks like; it never counts as evidence of a policy);
- blocked: refused by an ICMP destination-unreachable that the kernel reports on the socket's error
  queue (a REJECT rule: kube-router's policies, and the kernel's ICMP rate limit turns further
  rejects into drops), or no answer within the attempt's timeout (a DROP rule: Calico, Cilium);
- anything else (no route, a local error): ambiguous.

The rule: the code starts only after ROUNDS_REQUIRED consecutive rounds in which BOTH destinations
were blocked. An open network cannot produce that: a listening destination connects, and a
destination that happens to be down (a closed port) answers with a reset, which breaks the streak.
It would take the API server's Service having no endpoints (kube-proxy then rejects with ICMP) at the
same time as a host firewall rejecting or dropping the kubelet's port, for every round. A missing or
malformed variable, or an enforcer that rejects with TCP resets, never lets the code run: after
WAIT_SECONDS the gate gives up with a reason naming the last answers.

Standard library only; shipped in the ConfigMap next to the runner. Usage:
    python3 -I isolation_gate.py WAIT_SECONDS RUNNER_PATH SPEC_PATH
"""

import errno
import ipaddress
import json
import os
import selectors
import socket
import struct
import sys
import time

MARKER = "@@sandbox-result@@ "  # runner.RESULT_MARKER
ROUNDS_REQUIRED = 3
ATTEMPT_TIMEOUT_SECONDS = 0.5
ROUND_INTERVAL_SECONDS = 0.1
BLOCKED = "blocked"
# Per address family: the socket option that queues ICMP errors, its origin code, and the ICMP type
# "destination unreachable" (<linux/errqueue.h>, <linux/in.h>, <linux/in6.h>).
RECVERR = {
    socket.AF_INET: (socket.IPPROTO_IP, 11, 2, 3),  # IP_RECVERR, SO_EE_ORIGIN_ICMP, ICMP_DEST_UNREACH
    socket.AF_INET6: (socket.IPPROTO_IPV6, 25, 3, 1),  # IPV6_RECVERR, SO_EE_ORIGIN_ICMP6, ICMPV6_DEST_UNREACH
}


class GateError(Exception):
    """The gate cannot check the network; the message says why."""


def destinations(env) -> list:
    """(family, host, port) of the API server's Service and the node's kubelet, from the environment."""
    found = []
    for host_name, port_name in (("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"),
                                 ("SANDBOX_NODE_IP", "SANDBOX_KUBELET_PORT")):
        host, port = env.get(host_name, ""), env.get(port_name, "")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            raise GateError(f"{host_name} must be an IP address, got {host!r}") from None
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise GateError(f"{port_name} must be a port number, got {port!r}")
        found.append((socket.AF_INET6 if address.version == 6 else socket.AF_INET, host, int(port)))
    return found


def _refusal(sock: socket.socket, family: int, error: int) -> str:
    """`blocked` when the connect error came as an ICMP destination-unreachable, else its name."""
    _level, _option, icmp_origin, unreachable = RECVERR[family]
    try:
        _data, ancillary, _flags, _address = sock.recvmsg(1, 512, socket.MSG_ERRQUEUE)
    except BlockingIOError:  # nothing queued: the destination's host itself answered (a reset)
        return os.strerror(error) + " (reset)"
    for _level, _type, data in ancillary:
        origin, icmp_type = struct.unpack_from("=4xBB", data)  # struct sock_extended_err
        if origin == icmp_origin and icmp_type == unreachable:
            return BLOCKED
    return os.strerror(error)


def probe(targets: list, timeout: float = ATTEMPT_TIMEOUT_SECONDS) -> list:
    """Connect to every target at once; one answer per target: `connected`, `blocked` or an error."""
    answers = ["no answer"] * len(targets)
    selector = selectors.DefaultSelector()
    sockets = []
    try:
        for index, (family, host, port) in enumerate(targets):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            level, option, _origin, _type = RECVERR[family]
            sock.setsockopt(level, option, 1)
            sock.setblocking(False)
            error = sock.connect_ex((host, port))
            if error in (0, errno.EINPROGRESS):
                selector.register(sock, selectors.EVENT_WRITE, index)
            else:
                answers[index] = _refusal(sock, family, error)
        deadline = time.monotonic() + timeout
        while selector.get_map() and time.monotonic() < deadline:
            for key, _events in selector.select(max(deadline - time.monotonic(), 0)):
                selector.unregister(key.fileobj)
                error = key.fileobj.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                family = targets[key.data][0]
                answers[key.data] = "connected" if error == 0 else _refusal(key.fileobj, family, error)
        for key in selector.get_map().values():
            answers[key.data] = BLOCKED  # no answer in time: dropped
    finally:
        selector.close()
        for sock in sockets:
            sock.close()
    return answers


def wait_until_isolated(targets: list, wait_seconds: float) -> None:
    """Return once ROUNDS_REQUIRED consecutive rounds found every target blocked; GateError otherwise."""
    deadline = time.monotonic() + wait_seconds
    streak = 0
    while True:
        answers = probe(targets)
        streak = streak + 1 if all(answer == BLOCKED for answer in answers) else 0
        if streak >= ROUNDS_REQUIRED:
            return
        if time.monotonic() >= deadline:
            seen = ", ".join(f"{host}:{port} {answer}" for (_family, host, port), answer in zip(targets, answers))
            raise GateError(f"the sandbox's network was not shown to be cut off within {wait_seconds:g} s "
                            f"(last answers: {seen}; is a NetworkPolicy enforcer running?)")
        time.sleep(ROUND_INTERVAL_SECONDS)


def main() -> None:
    try:
        if len(sys.argv) != 4:
            raise GateError("usage: isolation_gate.py WAIT_SECONDS RUNNER_PATH SPEC_PATH")
        try:
            wait_seconds = float(sys.argv[1])
        except ValueError:
            raise GateError(f"WAIT_SECONDS must be a number, got {sys.argv[1]!r}") from None
        wait_until_isolated(destinations(os.environ), wait_seconds)
    except (GateError, OSError) as error:
        reason = f"isolation gate: {error}; the code was not run"
        print(MARKER + json.dumps({"status": "error_setup", "reason": reason, "exit_code": None}), flush=True)
        sys.exit(0)
    os.execv(sys.executable, [sys.executable, "-I", sys.argv[2], sys.argv[3]])


if __name__ == "__main__":
    main()
