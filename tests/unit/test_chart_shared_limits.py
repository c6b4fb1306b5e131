"""The decisions of sandbox_api.shared_limits (the Lease round trip is tested on the real cluster in
tests/e2e/test_helm_shared_limits.py)."""

from __future__ import annotations

from sandbox_api.shared_limits import (
    ADMISSION_GRACE_SECONDS, TenantState, admit_execution, lease_name, take_token,
)


def test_state_round_trips_through_annotations():
    state = TenantState(tokens=2.5, updated=1000.25, admitted={"exec-a": 999.0})
    assert TenantState.from_annotations(state.annotations(), burst=5, now=2000.0) == state


def test_missing_or_garbled_annotations_start_a_full_bucket():
    assert TenantState.from_annotations({}, burst=5, now=7.0) == TenantState(tokens=5.0, updated=7.0)
    garbled = {"sandbox.dev/rate-tokens": "x", "sandbox.dev/rate-updated": "1"}
    assert TenantState.from_annotations(garbled, burst=3, now=7.0).tokens == 3.0


def test_bucket_allows_the_burst_then_refuses_until_refilled():
    state = TenantState(tokens=2.0, updated=100.0)
    assert take_token(state, rate_per_s=1.0, burst=2, now=100.0) == 0
    assert take_token(state, rate_per_s=1.0, burst=2, now=100.0) == 0
    assert take_token(state, rate_per_s=1.0, burst=2, now=100.0) > 0
    assert take_token(state, rate_per_s=1.0, burst=2, now=101.0) == 0


def test_a_clock_behind_the_stored_update_never_mints_tokens():
    state = TenantState(tokens=0.0, updated=200.0)
    assert take_token(state, rate_per_s=1.0, burst=2, now=150.0) > 0


def test_admission_counts_listed_and_recently_admitted_executions():
    state = TenantState(tokens=1, updated=0, admitted={"young": 95.0})
    assert admit_execution(state, execution_id="new", listed={"running", "done"}, unfinished={"running"}, limit=3, now=100.0)
    assert set(state.admitted) == {"young", "new"}
    assert not admit_execution(state, execution_id="another", listed={"running"}, unfinished={"running"}, limit=3, now=100.0)


def test_admissions_leave_the_lease_once_listed_or_stale():
    state = TenantState(tokens=1, updated=0, admitted={"listed": 99.0, "stale": 100.0 - ADMISSION_GRACE_SECONDS})
    assert admit_execution(state, execution_id="new", listed={"listed"}, unfinished={"listed"}, limit=2, now=100.0)
    assert state.admitted == {"new": 100.0}


def test_a_finished_execution_frees_its_slot_at_once():
    state = TenantState(tokens=1, updated=0, admitted={"finished": 99.0})
    assert admit_execution(state, execution_id="next", listed={"finished"}, unfinished=set(), limit=1, now=100.0)
    assert state.admitted == {"next": 100.0}


def test_lease_name_hides_the_tenant_and_is_a_valid_name():
    name = lease_name("acme")
    assert "acme" not in name and len(name) <= 63 and name == name.lower()
