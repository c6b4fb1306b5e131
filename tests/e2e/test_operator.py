"""The operator on the real cluster, used as the README shows: kubectl apply, get, wait; validation;
hardening; retention; an operator killed mid-execution.

The operator runs as a real process on the host (admin kubeconfig), watching only this run's
namespaces, each enforcing the `restricted` Pod Security Standard (see conftest.py).
"""

from __future__ import annotations

import base64
import gzip
import json

import pytest

from tests.e2e.kube import (
    REPO,
    FINISH_SECONDS,
    SETUP_DEADLINE_SECONDS,
    apply,
    events_for,
    execution,
    execution_body,
    get_json,
    kubectl,
    wait_finished,
    wait_until,
)


def test_kubectl_apply_of_the_example_completes_and_shows_in_get(ns):
    kubectl("-n", ns, "apply", "-f", str(REPO / "examples" / "hello.yaml"))
    resource = wait_finished(ns, "hello")
    status = resource["status"]
    assert status["phase"] == "completed", status
    assert status["stdout"] == "Hello, Sandbox!\n"
    assert status["exitCode"] == 0
    assert status["outputFiles"] == [{"name": "greeting.txt", "content": "Sandbox", "encoding": "utf-8"}]
    assert status["podName"].startswith("sbx-hello-")
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Finished"]["status"] == "True" and conditions["Succeeded"]["status"] == "True"
    table = kubectl("-n", ns, "get", "sbx").stdout
    header, row = table.splitlines()[:2]
    assert header.split()[:5] == ["NAME", "LANGUAGE", "PHASE", "EXIT", "DURATION-MS"]
    assert row.split()[:4] == ["hello", "python", "completed", "0"]
    # Children are cleaned up once the result is in status; an Event tells what happened.
    wait_until(lambda: not kubectl("-n", ns, "get", "job,configmap", "-l", "sandbox.dev/execution=hello",
                                   "-o", "name").stdout.strip(), 60, "children deleted")
    assert any(e["reason"] == "Completed" for e in events_for(ns, "hello"))


def test_failures_are_terminal_and_classified(ns):
    apply(ns,
          execution("exits-3", code="import sys; sys.exit(3)"),
          execution("sleeps", code="import time; time.sleep(60)", timeoutSeconds=2),
          execution("cobol", language="cobol"))
    exits = wait_finished(ns, "exits-3")["status"]
    assert (exits["phase"], exits["exitCode"]) == ("error_runtime", 3)
    assert {c["type"]: c["status"] for c in exits["conditions"]}["Succeeded"] == "False"
    assert wait_finished(ns, "sleeps")["status"]["phase"] == "timeout"
    cobol = wait_finished(ns, "cobol")["status"]
    assert cobol["phase"] == "error_setup" and "Unsupported language: 'cobol'" in cobol["reason"]


def test_missing_image_ends_error_setup_within_the_setup_deadline(ns):
    apply(ns, execution("ghost", language="ghost"))
    status = wait_finished(ns, "ghost", seconds=SETUP_DEADLINE_SECONDS + 60)["status"]
    assert status["phase"] == "error_setup", status
    assert "ghost" in status["reason"] or "Image" in status["reason"], status["reason"]


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"language": "python", "code": "1", "timeoutSeconds": 0}, "timeoutSeconds"),
        ({"language": "python", "code": "1", "maxMemoryMb": 1}, "maxMemoryMb"),
        ({"language": "py thon", "code": "1"}, "spec.language"),
        ({"language": "python"}, "give either code (and the other inputs) or inputsConfigMap"),
        ({"language": "python", "code": "1", "inputsConfigMap": "x"}, "give either code (and the other inputs) or inputsConfigMap"),
        ({"language": "python", "inputsConfigMap": "x", "stdin": "1"}, "with inputsConfigMap, code, stdin"),
        ({"language": "python", "code": "1", "files": [{"name": "../etc/passwd", "content": "x"}]}, "must not contain '..'"),
        ({"language": "python", "code": "1", "files": [{"name": "/abs", "content": "x"}]}, "must be relative"),
        ({"language": "python", "code": "1", "files": [{"name": "a", "content": "x", "encoding": "rot13"}]}, "encoding"),
        ({"language": "python", "code": "1", "shell": True}, "unknown field"),
    ],
    ids=["timeout", "memory", "language", "no-code", "code-and-configmap", "stdin-and-configmap", "dotdot", "absolute",
         "encoding", "unknown-field"],
)
def test_invalid_resources_are_refused_with_a_readable_message(ns, spec, message):
    refused = apply(ns, {**execution_body("bad"), "spec": spec}, check=False)
    assert refused.returncode != 0
    assert message in refused.stderr, refused.stderr


def inputs_configmap(name: str, inputs: dict, owner: dict | None = None) -> dict:
    """A ConfigMap of inputs as a kubectl user writes one: gzip-compressed JSON, owned by `owner`."""
    metadata = {"name": name}
    if owner is not None:
        metadata["ownerReferences"] = [{"apiVersion": "sandbox.dev/v1alpha1", "kind": "SandboxExecution",
                                        "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"]}]
    data = base64.b64encode(gzip.compress(json.dumps(inputs).encode())).decode()
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "binaryData": {"inputs.json.gz": data}}


def test_inputs_from_a_configmap_run_only_when_it_is_the_executions_own(ns):
    by_reference = {"apiVersion": "sandbox.dev/v1alpha1", "kind": "SandboxExecution", "metadata": {"name": "referenced"},
                    "spec": {"language": "python", "inputsConfigMap": "referenced-inputs"}}
    apply(ns, by_reference)
    # Made second, as the API makes it: the operator waits for it.
    owner = get_json("-n", ns, "sbx/referenced")
    apply(ns, inputs_configmap("referenced-inputs", {
        "code": "print(input()[::-1])", "tests": [{"input": "abc", "expectedOutput": "cba"}, {"input": "x", "expectedOutput": "y"}],
    }, owner))
    status = wait_finished(ns, "referenced")["status"]
    assert status["phase"] == "completed", status
    assert [test["verdict"] for test in status["tests"]] == ["passed", "wrong_answer"]
    # Someone else's ConfigMap (their secrets, say) is never read into a sandbox.
    apply(ns, inputs_configmap("not-yours", {"code": "print('leaked')"}),
          {**by_reference, "metadata": {"name": "borrower"}, "spec": {"language": "python", "inputsConfigMap": "not-yours"}})
    borrowed = wait_finished(ns, "borrower")["status"]
    assert borrowed["phase"] == "error_setup" and "is not owned by this SandboxExecution" in borrowed["reason"], borrowed
    # The inputs go with their execution.
    kubectl("-n", ns, "delete", "sbx/referenced")
    wait_until(lambda: kubectl("-n", ns, "get", "configmap", "referenced-inputs", check=False).returncode != 0, 60,
               "the inputs ConfigMap garbage-collected with its execution")


def test_spec_is_immutable(ns):
    apply(ns, execution("fixed", code="print(1)"))
    changed = apply(ns, execution("fixed", code="print(2)"), check=False)
    assert changed.returncode != 0 and "spec is immutable" in changed.stderr


def test_sandbox_pod_is_locked_down_inside(ns):
    """Runs under enforce=restricted (else the pod would be refused) with no token, uid 65532, read-only /."""
    code = (
        "import os, json\n"
        "def writable(path):\n"
        "    try:\n"
        "        open(path, 'w').close(); return True\n"
        "    except OSError:\n"
        "        return False\n"
        "print(json.dumps({'uid': os.getuid(), 'gid': os.getgid(),\n"
        "  'token': os.path.exists('/var/run/secrets/kubernetes.io/serviceaccount'),\n"
        "  'root_writable': writable('/usr/owned'), 'tmp_writable': writable('/tmp/ok'),\n"
        "  'caps': [l for l in open('/proc/self/status') if l.startswith('CapEff')][0].split()[1],\n"
        "  'no_new_privs': [l for l in open('/proc/self/status') if l.startswith('NoNewPrivs')][0].split()[1]}))\n"
    )
    apply(ns, execution("inside", code=code))
    status = wait_finished(ns, "inside")["status"]
    assert status["phase"] == "completed", status
    facts = json.loads(status["stdout"])
    assert facts == {"uid": 65532, "gid": 65532, "token": False, "root_writable": False, "tmp_writable": True,
                     "caps": "0000000000000000", "no_new_privs": "1"}


def test_retention_deletes_finished_executions(ns):
    apply(ns, execution("short-lived", ttlSecondsAfterFinished=0))
    # It may be gone before anyone reads it; the Event outlives it and tells how it ended.
    wait_until(lambda: any(e["reason"] == "Completed" for e in events_for(ns, "short-lived")), FINISH_SECONDS,
               "the execution completed")
    wait_until(lambda: kubectl("-n", ns, "get", "sbx/short-lived", check=False).returncode != 0, 90,
               "the finished execution deleted after its retention")


def test_deleting_a_running_execution_deletes_its_children(ns):
    apply(ns, execution("doomed", code="import time; time.sleep(50)", timeoutSeconds=60))
    wait_until(lambda: get_json("-n", ns, "sbx/doomed").get("status", {}).get("phase") == "running", 120, "running")
    kubectl("-n", ns, "delete", "sbx/doomed", "--wait=true", "--timeout=60s")
    wait_until(lambda: not kubectl("-n", ns, "get", "job,configmap,pod", "-l", "sandbox.dev/execution=doomed",
                                   "-o", "name").stdout.strip(), 120, "children garbage-collected")


def test_operator_killed_mid_execution_completes_once(ns, operator):
    apply(ns, execution("survivor", code="import time; time.sleep(8); print('done')", timeoutSeconds=30))
    running = wait_until(lambda: get_json("-n", ns, "sbx/survivor").get("status", {}).get("phase") == "running"
                         and get_json("-n", ns, "sbx/survivor")["status"], 120, "running")
    operator.kill()
    jobs = get_json("jobs", "-n", ns, "-l", "sandbox.dev/execution=survivor")["items"]
    operator.start()
    status = wait_finished(ns, "survivor")["status"]
    assert status["phase"] == "completed" and status["stdout"] == "done\n"
    assert len(jobs) == 1
    assert status["podName"] == running["podName"], "the pod that ran before the kill is the one that finished"
    completed_events = [e for e in events_for(ns, "survivor") if e["reason"] == "Completed"]
    assert len(completed_events) == 1 and completed_events[0].get("count", 1) == 1


def test_operator_killed_while_creating_children_creates_one_job(ns, operator):
    apply(ns, execution("early", code="print('once')"))
    operator.kill()  # most likely before or during the create handler
    operator.start()
    status = wait_finished(ns, "early")["status"]
    assert status["phase"] == "completed" and status["stdout"] == "once\n"
    assert len([e for e in events_for(ns, "early") if e["reason"] == "Completed"]) == 1
    # The job controller records every pod it creates; one Job ran exactly one pod.
    created = [e for e in get_json("events", "-n", ns)["items"]
               if e["reason"] == "SuccessfulCreate" and e["involvedObject"]["name"] == "sbx-early"]
    assert len(created) == 1 and created[0].get("count", 1) == 1
