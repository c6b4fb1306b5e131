"""The operator's configuration, read once from the environment (the chart sets these variables) by the
parser the API uses too (`sandbox_contract.settings`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from sandbox_contract.request import ExecutionLimits
from sandbox_contract.settings import check, comma_list, group, read_settings, setting
from sandbox_contract.settings import markdown_table as settings_table


def _namespaces(text: str) -> tuple[str, ...]:
    names = comma_list(text)
    return () if names == ("*",) else names


@dataclass(frozen=True)
class OperatorConfig:
    """What the operator watches and how it shapes every sandbox pod."""

    namespaces: tuple[str, ...] = setting(
        (), "namespaces to watch, comma-separated, globs allowed (`team-*`); `*` or unset: all",
        shown="all", parse=_namespaces,
    )
    setup_deadline_seconds: int = setting(
        120, "a pod not running by then ends `error_setup` (missing image, unschedulable)")
    runner_memory_headroom_mb: int = setting(
        64, "memory limit = requested + this (for the runner itself) + the work dir and `/tmp` sizes (tmpfs)",
        env="SANDBOX_RUNNER_HEADROOM_MB",
    )
    cpu_limit: str = setting("1", "CPU limit of a sandbox pod")
    cpu_request: str = setting("100m", "CPU request of a sandbox pod")
    work_dir_size_mb: int = setting(64, "size of the memory-backed work dir")
    tmp_size_mb: int = setting(16, "size of the memory-backed `/tmp`")
    image_pull_policy: str = setting("IfNotPresent", "pull policy of the sandbox pods' images")
    runtime_class_name: str | None = setting(None, "RuntimeClass of sandbox pods, e.g. `gvisor`",
                                             env="SANDBOX_RUNTIME_CLASS")
    node_selector: dict[str, str] = setting(help="nodeSelector of sandbox pods, a JSON object", factory=dict)
    tolerations: list[dict] = setting(help="tolerations of sandbox pods, a JSON array", factory=list)
    isolation_wait_seconds: int = setting(
        30, "code starts only once the pod's network is shown cut off (NetworkPolicy enforced); "
        "not shown after this long -> `error_setup` (0 disables the check)",
    )
    job_ttl_seconds: int = setting(600, "a Job the operator failed to delete is removed by Kubernetes after this long")
    # In the cluster the kubelet's pod PID limit bounds processes, not SANDBOX_MAX_PROCESSES.
    limits: ExecutionLimits = group(ExecutionLimits, without={"max_processes"})
    metrics_port: int = setting(9090, "port of the Prometheus metrics (0: none)", maximum=65535)
    peering_name: str | None = setting(
        None, "kopf peering object shared by replicas; only the one with the highest priority acts",
        env="SANDBOX_PEERING", shown="unset (standalone)",
    )
    priority: int | None = setting(None, "this replica's peering priority; replicas need distinct ones",
                                   shown="random")
    languages_file: str = setting("", "language catalogue replacing the shipped one")

    def __post_init__(self) -> None:
        check(self)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> OperatorConfig:
        """The configuration from SANDBOX_* variables; unset ones keep their defaults."""
        return read_settings(cls, env)


def markdown_table() -> str:
    """The operator's configuration table for the README."""
    return settings_table(OperatorConfig)
