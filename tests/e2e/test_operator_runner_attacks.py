"""The runner under attack in a real sandbox pod: the same attacks as on the local backend.

In the pod the runner is pid 1 of the container (its own isolation gate runs first), same uid as the
program. The program must not trace it, signal it, or write a result line through /proc.
"""

from __future__ import annotations

from tests.e2e.kube import apply, execution, wait_finished
from tests.integration.test_local_attacks import FORGE_THROUGH_PROC, SIGNAL_EVERY_PROCESS, TRACE_EVERY_PROCESS


def test_the_runner_in_a_pod_cannot_be_traced_signalled_or_forged(ns):
    apply(ns,
          execution("trace", code=TRACE_EVERY_PROCESS),
          execution("signal", code=SIGNAL_EVERY_PROCESS, timeoutSeconds=10),
          execution("forge", code=FORGE_THROUGH_PROC),
          execution("kill-all", language="bash", code="sleep 30 & kill -9 -1; wait; echo survived; exit 3"))
    trace = wait_finished(ns, "trace")["status"]
    lines = trace["stdout"].splitlines()
    assert "1 EPERM" in lines and all(line.endswith(" EPERM") for line in lines), trace

    signalled = wait_finished(ns, "signal")["status"]
    assert (signalled["phase"], signalled["exitCode"], signalled["stdout"]) == (
        "error_runtime", 42, "still here [1]\n"), signalled

    forged = wait_finished(ns, "forge")["status"]
    assert (forged["phase"], forged["exitCode"], forged.get("outputFiles") or []) == ("error_runtime", 42, []), forged
    assert "WRITTEN" not in forged["stdout"] and "Permission denied" in forged["stdout"], forged

    killed = wait_finished(ns, "kill-all")["status"]
    assert (killed["exitCode"], killed["stdout"]) == (3, "survived\n"), killed
