"""Settings from the environment and flags; the bounded result store; result parsing."""

from __future__ import annotations

import argparse
import asyncio

import pytest

from sandbox_api.backends.bubblewrap import parse_result
from sandbox_api.config import add_arguments, settings_from_args, settings_from_env
from sandbox_api.models import ExecutionResult
from sandbox_api.store import ExecutionStore, result_size
from sandbox_contract.result import Result


def test_settings_come_from_sandbox_variables():
    settings = settings_from_env({"SANDBOX_PORT": "9001", "SANDBOX_INSECURE_NO_AUTH": "true",
                                  "SANDBOX_LANGUAGES_FILE": "/x.yaml"})
    assert (settings.port, settings.insecure_no_auth, settings.languages_file) == (9001, True, "/x.yaml")
    assert settings.limits.max_timeout_seconds == 60


@pytest.mark.parametrize("variable,value", [("SANDBOX_PORT", "eighty"), ("SANDBOX_INSECURE_NO_AUTH", "maybe")])
def test_bad_variables_are_named(variable, value):
    with pytest.raises(ValueError, match=variable):
        settings_from_env({variable: value})


def test_flags_override_the_environment(monkeypatch):
    monkeypatch.setenv("SANDBOX_PORT", "9001")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert settings_from_args(parser.parse_args(["--port", "9002"])).port == 9002
    assert settings_from_args(parser.parse_args([])).port == 9001


def test_the_limits_keep_their_flags(monkeypatch):
    monkeypatch.setenv("SANDBOX_MAX_TIMEOUT_SECONDS", "120")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    limits = settings_from_args(parser.parse_args(["--default-timeout-seconds", "90", "--max-processes", "7"])).limits
    assert (limits.default_timeout_seconds, limits.max_timeout_seconds, limits.max_processes) == (90, 120, 7)


def _state(execution_id: str, status: str) -> ExecutionResult:
    return ExecutionResult(execution_id=execution_id, language="python", status=status)


def test_store_scopes_by_tenant_and_wakes_waiters():
    async def scenario():
        store = ExecutionStore(retention_seconds=60, max_bytes=10**6)
        store.add("exec-1", "a", _state("exec-00000000000000000001", "pending"))
        assert store.get("exec-1", "b") is None
        waiter = asyncio.create_task(store.wait("exec-1", "a", 10))
        await asyncio.sleep(0)
        store.update("exec-1", _state("exec-00000000000000000001", "completed"))
        assert (await waiter).status == "completed"
        assert (await store.wait("exec-1", "a", 0)).status == "completed"
        assert await store.wait("exec-1", "b", 0) is None

    asyncio.run(scenario())


def _finished(execution_id: str, stdout: str) -> ExecutionResult:
    return ExecutionResult(execution_id="exec-00000000000000000000", language="python", status="completed",
                           stdout=stdout, output_files={"out.txt": stdout})


def test_store_forgets_oldest_finished_beyond_its_byte_budget_but_keeps_running_ones():
    one_mib = "x" * (1 << 20)
    each = result_size(_finished("x", one_mib))
    assert each > 2 << 20, "stdout and output files both count"
    store = ExecutionStore(retention_seconds=60, max_bytes=3 * each)
    store.add("running", "a", _state("exec-00000000000000000000", "running"))
    for index in range(10):
        store.add(f"done-{index}", "a", _state("exec-00000000000000000000", "pending"))
        store.update(f"done-{index}", _finished(f"done-{index}", one_mib))
    assert store.get("running", "a") is not None
    assert [store.get(f"done-{index}", "a") is not None for index in range(10)] == [False] * 7 + [True] * 3
    assert store.finished_bytes == 3 * each


def test_small_results_are_kept_by_the_thousand():
    store = ExecutionStore(retention_seconds=60, max_bytes=16 << 20)
    for index in range(5000):
        store.add(f"done-{index}", "a", _state("exec-00000000000000000000", "pending"))
        store.update(f"done-{index}", _finished(f"done-{index}", "ok\n"))
    assert store.get("done-0", "a") is not None


def test_store_forgets_finished_results_after_retention():
    store = ExecutionStore(retention_seconds=0, max_bytes=10**6)
    store.add("x", "a", _state("exec-00000000000000000000", "pending"))
    store.update("x", _state("exec-00000000000000000000", "completed"))
    assert store.get("x", "a") is None


def test_result_line_is_the_last_marked_line():
    out = b'noise\n@@sandbox-result@@ {"status": "error_setup"}\n@@sandbox-result@@ {"status": "completed"}\n'
    assert parse_result(out) == {"status": "completed"}
    assert parse_result(b"@@sandbox-result@@ {broken\n") is None
    assert parse_result(b"") is None


@pytest.mark.parametrize("environment,fragment", [
    ({"SANDBOX_RATE_PER_MINUTE": "0"}, "SANDBOX_RATE_PER_MINUTE must be at least 1"),
    ({"SANDBOX_KEY_SHARE_PERCENT": "101"}, "SANDBOX_KEY_SHARE_PERCENT must be at most 100"),
    ({"SANDBOX_PORT": "65536"}, "SANDBOX_PORT must be at most 65535"),
])
def test_inconsistent_settings_are_refused(environment, fragment):
    with pytest.raises(ValueError, match=fragment):
        settings_from_env(environment)


def test_output_file_names_with_control_characters_are_dropped_and_flagged():
    document = {"status": "completed", "output_files": {
        "ok.txt": "kept", "new\nline": "x", "esc\x1b[2J": "x", "del\x7f": "x", "c1\x9b": "x", "\udcff": "x",
    }}
    result = ExecutionResult.of(Result.from_runner(document, None), execution_id="exec-00000000000000000000",
                                language="bash")
    assert (result.output_files, result.output_files_truncated) == ({"ok.txt": "kept"}, True)
    clean = ExecutionResult.of(Result.from_runner({"status": "completed", "output_files": {"ünï.txt": "x"}}, None),
                               execution_id="exec-00000000000000000000", language="bash")
    assert not clean.output_files_truncated
