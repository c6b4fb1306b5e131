"""The operator's configuration, read once from the environment (the chart sets these variables)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from sandbox_operator.runner_spec import ExecutionLimits


class ConfigError(ValueError):
    """An environment variable holds a value the operator cannot use; the message names it."""


@dataclass(frozen=True)
class OperatorConfig:
    """What the operator watches and how it shapes every sandbox pod."""

    # Namespaces to watch; empty means all namespaces.
    namespaces: tuple[str, ...] = ()
    # A pod not running after this long ends `error_setup` (missing image, unschedulable, ...).
    setup_deadline_seconds: int = 120
    # Memory for the runner itself on top of what the program was granted.
    runner_memory_headroom_mb: int = 64
    cpu_limit: str = "1"
    cpu_request: str = "100m"
    work_dir_size_mb: int = 64
    tmp_size_mb: int = 16
    image_pull_policy: str = "IfNotPresent"
    runtime_class_name: str | None = None
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict] = field(default_factory=list)
    # Code starts only once the pod's network is cut off (NetworkPolicy enforced); 0 skips the check.
    isolation_wait_seconds: int = 30
    # A Job the operator failed to delete is removed by Kubernetes after this long anyway.
    job_ttl_seconds: int = 600
    limits: ExecutionLimits = field(default_factory=ExecutionLimits)
    metrics_port: int = 9090
    # kopf peering object shared by replicas; None runs standalone (a single replica).
    peering_name: str | None = None
    # Replicas need distinct priorities: the highest acts, the others wait (kopf peering).
    priority: int | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> OperatorConfig:
        """The configuration from SANDBOX_* variables; unset ones keep their defaults."""
        defaults = cls()
        base_limits = ExecutionLimits()
        namespaces = tuple(part.strip() for part in env.get("SANDBOX_NAMESPACES", "").split(",") if part.strip())
        return cls(
            namespaces=() if namespaces == ("*",) else namespaces,
            setup_deadline_seconds=_int(env, "SANDBOX_SETUP_DEADLINE_SECONDS", defaults.setup_deadline_seconds),
            runner_memory_headroom_mb=_int(env, "SANDBOX_RUNNER_HEADROOM_MB", defaults.runner_memory_headroom_mb),
            cpu_limit=env.get("SANDBOX_CPU_LIMIT", defaults.cpu_limit),
            cpu_request=env.get("SANDBOX_CPU_REQUEST", defaults.cpu_request),
            work_dir_size_mb=_int(env, "SANDBOX_WORK_DIR_SIZE_MB", defaults.work_dir_size_mb),
            tmp_size_mb=_int(env, "SANDBOX_TMP_SIZE_MB", defaults.tmp_size_mb),
            image_pull_policy=env.get("SANDBOX_IMAGE_PULL_POLICY", defaults.image_pull_policy),
            runtime_class_name=env.get("SANDBOX_RUNTIME_CLASS") or None,
            node_selector=_json(env, "SANDBOX_NODE_SELECTOR", {}, dict),
            tolerations=_json(env, "SANDBOX_TOLERATIONS", [], list),
            job_ttl_seconds=_int(env, "SANDBOX_JOB_TTL_SECONDS", defaults.job_ttl_seconds),
            isolation_wait_seconds=_int(env, "SANDBOX_ISOLATION_WAIT_SECONDS", defaults.isolation_wait_seconds),
            limits=ExecutionLimits(
                default_timeout_seconds=_int(env, "SANDBOX_DEFAULT_TIMEOUT_SECONDS", base_limits.default_timeout_seconds),
                max_timeout_seconds=_int(env, "SANDBOX_MAX_TIMEOUT_SECONDS", base_limits.max_timeout_seconds),
                default_memory_mb=_int(env, "SANDBOX_DEFAULT_MEMORY_MB", base_limits.default_memory_mb),
                max_memory_mb=_int(env, "SANDBOX_MAX_MEMORY_MB", base_limits.max_memory_mb),
            ),
            metrics_port=_int(env, "SANDBOX_METRICS_PORT", defaults.metrics_port),
            peering_name=env.get("SANDBOX_PEERING") or None,
            priority=_int(env, "SANDBOX_PRIORITY", None) if env.get("SANDBOX_PRIORITY") else None,
        )


def _int(env: Mapping[str, str], name: str, default: int | None) -> int | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < 0:
        raise ConfigError(f"{name} must not be negative, got {value}")
    return value


def _json(env: Mapping[str, str], name: str, default, kind: type):
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ConfigError(f"{name} must be JSON: {error}") from None
    if not isinstance(value, kind):
        raise ConfigError(f"{name} must be a JSON {'object' if kind is dict else 'array'}")
    return value
