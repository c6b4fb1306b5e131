"""Attacks on the Kubernetes path, run for real: disk bursts, a termination-log flood, output that
grows when the API server escapes it, a result too large to store, a namespace that opens the network.
"""

from __future__ import annotations

import json

import pytest

from sandbox_contract import crd
from sandbox_contract.crd import STATUS_BUDGET_BYTES, stored_size
from tests.e2e.kube import CLUSTER_DIR, apply, execution, get_json, kubectl, wait_finished, wait_until

MIB = 1 << 20
WORK_DIR_BYTES, TMP_BYTES = 64 * MIB, 16 * MIB  # the operator's defaults
FILE_BYTES = 64 * MIB  # the runner's default RLIMIT_FSIZE for the program
KUBELET_PODS = CLUSTER_DIR / "kubelet" / "pods"


@pytest.mark.parametrize("directory, limit", [("/sandbox/work", WORK_DIR_BYTES), ("/tmp", TMP_BYTES)],
                         ids=["work-dir", "tmp"])
def test_a_4_gb_disk_burst_stops_at_the_directory_limit(ns, directory, limit):
    code = f"dd if=/dev/zero of={directory}/burst bs=1M count=4096\necho \"dd: $?\"\nstat -c %s {directory}/burst\n"
    apply(ns, execution("burst", language="bash", code=code))
    status = wait_finished(ns, "burst")["status"]
    # The tmpfs refuses the write at its size: dd fails at once; nothing waits for an eviction.
    assert f"dd: error writing '{directory}/burst': No space left on device" in status["stderr"], status
    dd_exit, size = status["stdout"].split("\n")[:2]
    assert dd_exit == "dd: 1"
    assert int(size) <= limit


def test_a_termination_log_flood_stops_at_the_file_size_limit(ns):
    """/dev/termination-log is a 0666 file on the node's disk; only RLIMIT_FSIZE bounds it."""
    code = (
        "import errno, os, time\n"
        "written, chunk = 0, b'x' * (1 << 20)\n"
        "try:\n"
        "    with open('/dev/termination-log', 'wb', buffering=0) as log:\n"
        "        while written < 256 << 20:\n"
        "            written += log.write(chunk)\n"
        "    print('no error', written)\n"
        "except OSError as error:\n"
        "    print(errno.errorcode[error.errno], written)\n"
        "open('/tmp/flooded', 'w').close()\n"
        "while not os.path.exists('/tmp/checked'):\n"
        "    time.sleep(0.1)\n"
    )
    apply(ns, execution("flood", code=code, timeoutSeconds=60))
    pod_name = wait_until(lambda: get_json("-n", ns, "sbx/flood").get("status", {}).get("podName"), 120, "running")
    wait_until(lambda: kubectl("-n", ns, "exec", pod_name, "--", "test", "-e", "/tmp/flooded", check=False).returncode == 0,
               120, "the flood finished")
    uid = get_json("-n", ns, f"pod/{pod_name}")["metadata"]["uid"]
    node_files = list((KUBELET_PODS / uid / "containers" / "sandbox").iterdir())
    assert node_files, f"no termination log under {KUBELET_PODS / uid}"
    assert max(path.stat().st_size for path in node_files) <= FILE_BYTES
    kubectl("-n", ns, "exec", pod_name, "--", "python3", "-c", "open('/tmp/checked', 'w').close()")
    status = wait_finished(ns, "flood")["status"]
    assert status["phase"] == "completed", status
    assert status["stdout"] == f"EFBIG {FILE_BYTES}\n"


def test_angle_brackets_that_escaping_inflates_six_fold_are_stored_truncated(ns):
    """512 KiB of '<' is 3 MiB once the API server writes each as \\u003c: over etcd's limit, uncut."""
    code = "import sys; sys.stdout.write('<' * (512 * 1024))"
    apply(ns, execution("brackets", code=code))
    resource = wait_finished(ns, "brackets")
    status = resource["status"]
    assert status["phase"] == "completed", status["reason"]
    assert status["stdoutTruncated"] is True
    assert set(status["stdout"]) == {"<"} and 100_000 < len(status["stdout"]) < 512 * 1024
    recorded = int(resource["metadata"]["annotations"][crd.ANNOTATION_RESULT_BYTES])
    assert recorded == stored_size(status) <= STATUS_BUDGET_BYTES
    # The operator's sizing is the API server's own: the whole object, measured both ways.
    raw = kubectl("get", "--raw", f"/apis/{crd.API_VERSION}/namespaces/{ns}/{crd.PLURAL}/brackets").stdout
    assert len(raw.strip().encode()) == stored_size(json.loads(raw))


def test_a_result_that_cannot_be_stored_next_to_its_spec_ends_error_setup(ns):
    """900 kB of code and a 1 MiB result: the object would pass etcd's 1.5 MiB request limit."""
    code = "#" * 900_000 + (
        "\nimport sys\nsys.stdout.write('o' * (512 << 10)); sys.stderr.write('e' * (128 << 10))\n"
        "open('a.txt', 'w').write('a' * (256 << 10)); open('b.txt', 'w').write('b' * (200 << 10))\n"
    )
    # create, not apply: apply would copy the whole manifest into an annotation (256 KiB at most).
    kubectl("-n", ns, "create", "-f", "-", input=execution("oversized", code=code))
    resource = wait_finished(ns, "oversized")
    status = resource["status"]
    assert status["phase"] == "error_setup", status["phase"]
    assert status["reason"].startswith("the result could not be stored: the API server refused it with "), status["reason"]
    assert status["reason"].endswith("; the program had ended completed (exit code 0)"), status["reason"]
    assert (status["stdout"], status["outputFiles"]) == ("", [])
    assert int(resource["metadata"]["annotations"][crd.ANNOTATION_RESULT_BYTES]) == stored_size(status)


def test_a_namespace_that_opens_the_network_never_lets_the_code_run(ns):
    """An extra policy allowing all egress (policies only add up) leaves the sandbox's network open."""
    apply(ns, {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "allow-all-egress"},
        "spec": {"podSelector": {"matchLabels": {crd.LABEL_SANDBOX: "true"}}, "policyTypes": ["Egress"],
                 "egress": [{}]},
    })
    apply(ns, execution("escapee", code="print('the code ran')"))
    status = wait_finished(ns, "escapee")["status"]
    assert status["phase"] == "error_setup", status
    assert status["stdout"] == ""
    assert "isolation gate: the sandbox's network was not shown to be cut off within 30 s" in status["reason"]
    assert "connected" in status["reason"] and status["reason"].endswith("the code was not run")
