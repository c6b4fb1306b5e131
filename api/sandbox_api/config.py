"""Server configuration: one table of settings, each an environment variable and a CLI flag.

Precedence: command-line flag, then environment variable, then the default.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field, fields

from sandbox_operator.runner_spec import ExecutionLimits


def _setting(default, help: str, env: str | None = None):
    return field(default=default, metadata={"help": help, "env": env})


@dataclass(frozen=True)
class Settings:
    host: str = _setting("127.0.0.1", "address to listen on")
    port: int = _setting(8000, "port to listen on")
    backend: str = _setting("auto", "where code runs: local, kubernetes, or auto (kubernetes when a cluster is configured)")
    api_keys_file: str = _setting("", "file of API keys, one `tenant:sha256-hex-of-key` a line (see `sandbox-api new-key`)")
    api_keys: str = _setting("", "API keys as comma-separated `tenant:sha256-hex-of-key` (added to the file's)")
    insecure_no_auth: bool = _setting(False, "DEVELOPMENT ONLY: accept requests without a key (one shared tenant)")
    rate_per_minute: int = _setting(120, "requests per minute per key (token bucket)")
    rate_burst: int = _setting(30, "requests a key may make at once before the rate applies")
    max_concurrent_per_key: int = _setting(8, "executions a key may have unfinished at once")
    max_in_flight: int = _setting(64, "unfinished executions the server accepts in all (running + queued); 429 beyond")
    key_share_percent: int = _setting(50, "share of --max-in-flight one key may hold, in percent (429 beyond)")
    local_workers: int = _setting(max(os.cpu_count() or 1, 2), "sandboxes the local backend runs at once")
    max_body_bytes: int = _setting(256 * 1024, "largest request body accepted (413 beyond)")
    header_timeout_seconds: int = _setting(10, "time a client has to send a request's headers; the connection is closed beyond")
    body_timeout_seconds: int = _setting(30, "time a client has to send a request's body once its headers are in (408 beyond), or the rest of a refused one (closed beyond)")
    default_timeout_seconds: int = _setting(ExecutionLimits.default_timeout_seconds, "timeout when a request gives none")
    max_timeout_seconds: int = _setting(ExecutionLimits.max_timeout_seconds, "largest timeout a request may ask for")
    default_memory_mb: int = _setting(ExecutionLimits.default_memory_mb, "memory limit when a request gives none")
    max_memory_mb: int = _setting(ExecutionLimits.max_memory_mb, "largest memory limit a request may ask for")
    max_processes: int = _setting(ExecutionLimits.max_processes, "processes and threads per execution")
    result_retention_seconds: int = _setting(3600, "how long finished results stay readable by GET")
    max_result_bytes: int = _setting(256 * 1024 * 1024, "local backend: bytes of finished results kept in memory (oldest forgotten first)")
    max_retained_bytes_per_key: int = _setting(
        64 * 1024 * 1024,
        "kubernetes backend: bytes of executions (spec and stored result) a key keeps in the cluster; its oldest finished ones are deleted beyond",
    )
    kubernetes_namespace: str = _setting("sandbox", "namespace the kubernetes backend creates SandboxExecutions in")
    languages_file: str = _setting("", "language catalogue replacing the shipped one", env="SANDBOX_LANGUAGES_FILE")
    log_level: str = _setting("info", "log level: debug, info, warning, error")

    def __post_init__(self) -> None:
        for setting in fields(self):
            value = getattr(self, setting.name)
            if _kind(setting) is int and value < 1 and setting.name != "port":
                raise ValueError(f"{env_name(setting.name)} must be at least 1, got {value}")
        if self.key_share_percent > 100:
            raise ValueError(f"{env_name('key_share_percent')} must be at most 100, got {self.key_share_percent}")
        for default, maximum in (("default_timeout_seconds", "max_timeout_seconds"), ("default_memory_mb", "max_memory_mb")):
            if getattr(self, default) > getattr(self, maximum):
                raise ValueError(f"{env_name(default)} must not exceed {env_name(maximum)}")

    def limits(self) -> ExecutionLimits:
        return ExecutionLimits(
            default_timeout_seconds=self.default_timeout_seconds,
            max_timeout_seconds=self.max_timeout_seconds,
            default_memory_mb=self.default_memory_mb,
            max_memory_mb=self.max_memory_mb,
            max_processes=self.max_processes,
        )


def env_name(setting: str) -> str:
    declared = next(f for f in fields(Settings) if f.name == setting).metadata["env"]
    return declared or f"SANDBOX_{setting.upper()}"


def _parse(kind: type, text: str, name: str):
    if kind is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"{name} must be true or false, got {text!r}")
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {text!r}") from None


def _kind(setting) -> type:
    return {"int": int, "bool": bool, "str": str}[setting.type] if isinstance(setting.type, str) else setting.type


def settings_from_env(environ: dict[str, str] | None = None, **overrides) -> Settings:
    """Settings from SANDBOX_* variables, then `overrides`; ValueError names a bad variable."""
    environ = os.environ if environ is None else environ
    values = {}
    for setting in fields(Settings):
        name = env_name(setting.name)
        if name in environ:
            values[setting.name] = _parse(_kind(setting), environ[name], name)
    values.update(overrides)
    return Settings(**values)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One --flag per setting; unset flags fall back to the environment."""
    for setting in fields(Settings):
        flag = "--" + setting.name.replace("_", "-")
        help = f"{setting.metadata['help']} [env {env_name(setting.name)}, default {setting.default!r}]"
        if _kind(setting) is bool:
            parser.add_argument(flag, action="store_const", const=True, default=None, help=help)
        else:
            parser.add_argument(flag, type=_kind(setting), default=None, help=help)


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides = {s.name: getattr(args, s.name) for s in fields(Settings) if getattr(args, s.name) is not None}
    return settings_from_env(**overrides)


def markdown_table() -> str:
    """The configuration table for the README."""
    rows = ["| flag | environment variable | default | meaning |", "| --- | --- | --- | --- |"]
    for setting in fields(Settings):
        flag = "--" + setting.name.replace("_", "-")
        default = setting.default if setting.name != "local_workers" else "CPUs (at least 2)"
        rows.append(f"| `{flag}` | `{env_name(setting.name)}` | `{default}` | {setting.metadata['help']} |")
    return "\n".join(rows)
