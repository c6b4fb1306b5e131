"""Server configuration: one table of settings, each an environment variable and a CLI flag.

Precedence: command-line flag, then environment variable, then the default. The variables are read by
the parser the operator uses too (`sandbox_contract.settings`).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

from sandbox_contract.request import ExecutionLimits
from sandbox_contract.settings import check, group, read_settings, setting, settings_of
from sandbox_contract.settings import markdown_table as settings_table


def _setting(default, help: str, *, minimum: int = 1, **options):
    """An API setting: its numbers are counts, sizes and durations, at least 1 unless it says otherwise."""
    return setting(default, help, minimum=minimum, **options)


@dataclass(frozen=True)
class Settings:
    """What the server listens on, whom it lets in, how much it accepts and where code runs."""

    host: str = _setting("127.0.0.1", "address to listen on")
    port: int = _setting(8000, "port to listen on", minimum=0, maximum=65535)
    backend: str = _setting("auto", "where code runs: local, kubernetes, or auto (kubernetes when a cluster is configured)")
    api_keys_file: str = _setting("", "file of API keys, one `tenant:sha256-hex-of-key` a line (see `sandbox-api new-key`)")
    api_keys: str = _setting("", "API keys as comma-separated `tenant:sha256-hex-of-key` (added to the file's)")
    insecure_no_auth: bool = _setting(False, "DEVELOPMENT ONLY: accept requests without a key (one shared tenant)")
    rate_per_minute: int = _setting(120, "requests per minute per key (token bucket)")
    rate_burst: int = _setting(30, "requests a key may make at once before the rate applies")
    max_concurrent_per_key: int = _setting(8, "executions a key may have unfinished at once")
    max_in_flight: int = _setting(64, "unfinished executions the server accepts in all (running + queued); 429 beyond")
    key_share_percent: int = _setting(50, "share of --max-in-flight one key may hold, in percent (429 beyond)",
                                      maximum=100)
    local_workers: int = _setting(max(os.cpu_count() or 1, 2), "sandboxes the local backend runs at once",
                                 shown="CPUs (at least 2)")
    max_body_bytes: int = _setting(2 * 1024 * 1024, "largest request body accepted (413 beyond); the inputs in it may take 1280 KiB")
    header_timeout_seconds: int = _setting(10, "time a client has to send a request's headers; the connection is closed beyond")
    body_timeout_seconds: int = _setting(30, "time a client has to send a request's body once its headers are in (408 beyond), or the rest of a refused one (closed beyond)")
    # SANDBOX_DEFAULT_TIMEOUT_SECONDS and the other limits the operator reads too.
    limits: ExecutionLimits = group(ExecutionLimits)
    result_retention_seconds: int = _setting(3600, "how long finished results stay readable by GET")
    max_result_bytes: int = _setting(256 * 1024 * 1024, "local backend: bytes of finished results kept in memory (oldest forgotten first)")
    max_retained_bytes_per_key: int = _setting(
        64 * 1024 * 1024,
        "kubernetes backend: bytes of executions (spec and stored result) a key keeps in the cluster; its oldest finished ones are deleted beyond",
    )
    kubernetes_namespace: str = _setting("sandbox", "namespace the kubernetes backend creates SandboxExecutions in")
    languages_file: str = _setting("", "language catalogue replacing the shipped one")
    log_level: str = _setting("info", "log level: debug, info, warning, error")

    def __post_init__(self) -> None:
        check(self)


def settings_from_env(environ: dict[str, str] | None = None, **overrides) -> Settings:
    """Settings from SANDBOX_* variables, then `overrides`; ValueError names a bad variable."""
    return read_settings(Settings, os.environ if environ is None else environ, **overrides)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One --flag per setting; unset flags fall back to the environment."""
    for declared in settings_of(Settings):
        help = f"{declared.help} [env {declared.env}, default {declared.default!r}]"
        if declared.kind is bool:
            parser.add_argument(declared.flag, action="store_const", const=True, default=None, help=help)
        else:
            parser.add_argument(declared.flag, type=declared.kind, default=None, help=help)


def settings_from_args(args: argparse.Namespace) -> Settings:
    given = {declared.name: getattr(args, declared.name) for declared in settings_of(Settings)}
    return settings_from_env(**{name: value for name, value in given.items() if value is not None})


def markdown_table() -> str:
    """The configuration table for the README."""
    return settings_table(Settings, flags=True)
