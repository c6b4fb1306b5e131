"""Backend registry: a name in the configuration -> a factory. Kubernetes is imported lazily.

A factory takes (settings, catalogue) and returns a Backend. The kubernetes module provides
`create_backend(settings, catalogue)`.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from sandbox_api.backends.base import Backend
from sandbox_api.config import Settings
from sandbox_contract.catalogue import Catalogue
from sandbox_runner import RUNNER_PATH


def _create_local(settings: Settings, catalogue: Catalogue) -> Backend:
    from sandbox_api.backends.local import LocalBackend
    from sandbox_api.store import ExecutionStore

    return LocalBackend(
        catalogue=catalogue,
        limits=settings.limits,
        runner_source=RUNNER_PATH,
        workers=settings.local_workers,
        store=ExecutionStore(retention_seconds=settings.result_retention_seconds, max_bytes=settings.max_result_bytes),
    )


def _create_kubernetes(settings: Settings, catalogue: Catalogue) -> Backend:
    from sandbox_api.backends.kubernetes import create_backend  # needs the kubernetes client

    return create_backend(settings, catalogue)


BACKENDS: dict[str, Callable[[Settings, Catalogue], Backend]] = {
    "local": _create_local,
    "kubernetes": _create_kubernetes,
}


def choose_backend_name(settings: Settings) -> str:
    """The configured backend; `auto` means kubernetes when a cluster is configured, else local."""
    if settings.backend != "auto":
        return settings.backend
    in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    return "kubernetes" if in_cluster or os.environ.get("KUBECONFIG") else "local"


def create_backend(settings: Settings, catalogue: Catalogue) -> Backend:
    name = choose_backend_name(settings)
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of: auto, {', '.join(BACKENDS)}")
    return BACKENDS[name](settings, catalogue)
