"""The API's whole contract suite again, on the Kubernetes backend: one suite, two backends.

Every test of tests/integration/test_api_contract.py runs here unchanged against an API server whose
backend creates SandboxExecutions that the operator runs on the real cluster. Plus the Kubernetes
specifics: 50 concurrent executions, each run exactly once, and the tenant kept as a hash.
"""

from __future__ import annotations

import concurrent.futures
import random
import string
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.kube import KUBECONFIG, events_for, get_json
from tests.integration.conftest import TENANT, UNTHROTTLED, api, start_api_server  # noqa: F401  (fixtures)
from tests.integration.test_api_contract import *  # noqa: F401,F403  (the contract tests themselves)
from tests.integration.test_api_contract import assert_error


@pytest.fixture(scope="session")
def contract_namespace(new_namespace, operator) -> Iterator[str]:  # noqa: ARG001  (it watches)
    """The namespace every API server started here creates its SandboxExecutions in."""
    with new_namespace(f"{Path(__file__).name}::contract_namespace", watched=True) as name:
        yield name


@pytest.fixture(scope="session")
def api_server_env(contract_namespace) -> dict[str, str]:
    """Overrides the integration suite's fixture: every server started here uses the cluster."""
    return {"SANDBOX_BACKEND": "kubernetes", "KUBECONFIG": KUBECONFIG, "SANDBOX_KUBERNETES_NAMESPACE": contract_namespace}


@pytest.fixture
def fuzzing_examples() -> int:
    """A quarter of the local backend's budget: there the fuzzer has already searched the API's own
    validation; here it checks that the Kubernetes backend answers the same, and every valid request
    runs a pod (100 examples took 11 minutes of CI)."""
    return 25


def test_fifty_concurrent_executions_all_complete_once(start_api_server, contract_namespace):  # noqa: F811
    client = start_api_server(**{**UNTHROTTLED, "max_concurrent_per_key": 64})
    code = "import sys; print('run', sys.stdin.read())"
    with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
        responses = list(pool.map(
            lambda i: client.post("/api/sandbox/execute", json={"language": "python", "code": code, "input_data": str(i)}),
            range(50),
        ))
    assert [r.status_code for r in responses] == [200] * 50, [r.text for r in responses if r.status_code != 200]
    results = [r.json() for r in responses]
    assert [r["status"] for r in results] == ["completed"] * 50, [r["reason"] for r in results if r["status"] != "completed"]
    assert sorted(r["stdout"] for r in results) == sorted(f"run {i}\n" for i in range(50))
    ids = {r["execution_id"] for r in results}
    assert len(ids) == 50
    for execution_id in ids:
        resource = get_json("-n", contract_namespace, f"sbx/{execution_id}")
        assert resource["status"]["phase"] == "completed"
        # The tenant is recorded as a hash, never in the clear.
        assert TENANT not in str(resource["metadata"]["labels"])
        assert len([e for e in events_for(contract_namespace, execution_id) if e["reason"] == "Completed"]) == 1


def test_inputs_that_do_not_compress_into_one_configmap_are_413(api):  # noqa: F811
    # Random printable text deflates least: 1.3 MB of it is within the API's limit, not a ConfigMap's
    # (none of the characters that storage escapes, which would count against the API's limit).
    characters = [char for char in string.printable[:94] if char not in '<>&"\\']
    stdin = "".join(random.Random(12).choices(characters, k=1_300_000))
    response = api.post("/api/sandbox/execute", json={"language": "python", "code": "print(1)", "input_data": stdin})
    assert_error(response, 413, "bytes compressed", "at most 1032192 in one ConfigMap")
