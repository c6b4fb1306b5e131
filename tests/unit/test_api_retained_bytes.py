"""What the kubernetes backend counts against a key's retained-bytes budget, and what it deletes."""

from __future__ import annotations

from sandbox_api.backends.base import Execution
from sandbox_api.backends.kubernetes import resource_for
from sandbox_api.shared_limits import ANNOTATION_SPEC_BYTES, Listed, over_budget
from sandbox_contract.catalogue import load_catalogue
from sandbox_contract.crd import stored_size
from sandbox_contract.request import ExecutionLimits, resolve_request


def _listed(name: str, phase: str | None, created: str, size: int) -> Listed:
    return Listed(name=name, phase=phase, created=created, stored_bytes=size)


def test_oldest_finished_go_first_until_the_tenant_fits_its_budget():
    listed = [
        _listed("new", "completed", "2026-01-01T00:00:03Z", 40),
        _listed("running", "running", "2026-01-01T00:00:00Z", 50),
        _listed("old", "timeout", "2026-01-01T00:00:01Z", 30),
        _listed("middle", "error_setup", "2026-01-01T00:00:02Z", 30),
    ]
    assert [item.name for item in over_budget(listed, budget=100)] == ["old", "middle"]
    assert over_budget(listed, budget=150) == []


def test_unfinished_executions_are_never_deleted_even_over_budget():
    listed = [_listed("pending", None, "2026-01-01T00:00:00Z", 500), _listed("running", "running", "2026-01-01T00:00:01Z", 500)]
    assert over_budget(listed, budget=1) == []


def test_each_execution_carries_its_spec_size():
    request = resolve_request(catalogue=load_catalogue(), limits=ExecutionLimits(), language="python", code="<" * 100,
                              stdin=None, files=(), requested_limits={"timeout_seconds": 1, "max_memory_mb": 64})
    execution = Execution(id="exec-00000000000000000000", tenant="t", request=request)
    resource, _ = resource_for(execution, retention_seconds=60)
    assert int(resource["metadata"]["annotations"][ANNOTATION_SPEC_BYTES]) == stored_size(resource["spec"]) > 600
