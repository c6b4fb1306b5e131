"""A real API server per configuration, started as its own process, and clients bound to it.

The contract tests use the `api` fixture. The backend is whatever `api_server_env` selects: the
kubernetes tier overrides that one fixture (SANDBOX_BACKEND=kubernetes, KUBECONFIG, ...) and reuses
every contract test unchanged.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from sandbox_api.auth import digest, generate_key
from tests.serving import free_port, wait_until_serving

TENANT = "tenant-a"
OTHER_TENANT = "tenant-b"
SERVER_START_SECONDS = 60
# Generous per-key limits so the suite itself is never throttled; limit tests start their own server.
UNTHROTTLED = {"rate_per_minute": 100000, "rate_burst": 10000, "max_concurrent_per_key": 64, "max_in_flight": 128}


class ApiClient(httpx.Client):
    """An httpx client for one tenant of a running server, with the other parties at hand."""

    other_tenant: httpx.Client  # a second key: a different tenant
    anonymous: httpx.Client  # no Authorization header
    server_log: Path
    server_pid: int

    def execute(self, **body) -> dict:
        """POST /api/sandbox/execute and return the finished result (fails on anything but 200)."""
        response = self.post("/api/sandbox/execute", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    def close(self) -> None:
        self.other_tenant.close()
        self.anonymous.close()
        super().close()


def _client(base_url: str, key: str | None, cls=httpx.Client) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return cls(base_url=base_url, headers=headers, timeout=httpx.Timeout(180, connect=10))


@pytest.fixture(scope="session")
def api_server_env() -> dict[str, str]:
    """Environment for every API server the tests start: selects the backend."""
    return {"SANDBOX_BACKEND": "local"}


@pytest.fixture(scope="session")
def start_api_server(api_server_env, tmp_path_factory) -> Iterator[Callable[..., ApiClient]]:
    """start(**settings) -> ApiClient for a fresh server process configured with `settings`."""
    processes: list[subprocess.Popen] = []
    clients: list[ApiClient] = []

    def start(*, as_uid: int | None = None, **settings) -> ApiClient:
        """`as_uid`: run the server as that (unprivileged) uid instead of ours."""
        workdir = tmp_path_factory.mktemp(f"api-server-{uuid.uuid4().hex[:8]}")
        key, other_key = generate_key(), generate_key()
        # Tenants of their own per server: on Kubernetes the per-key limits live in the cluster and
        # would otherwise count executions earlier tests left running.
        suffix = uuid.uuid4().hex[:8]
        # In the environment, not a file: a server of another uid cannot read our temporary directory.
        keys = f"{TENANT}-{suffix}:{digest(key)},{OTHER_TENANT}-{suffix}:{digest(other_key)}"
        port = free_port()
        env = {**os.environ, **api_server_env, "SANDBOX_API_KEYS": keys}
        env.update({f"SANDBOX_{name.upper()}": str(value) for name, value in settings.items()})
        command = [sys.executable, "-m", "sandbox_api", "--host", "127.0.0.1", "--port", str(port)]
        if as_uid is not None:
            command = ["setpriv", f"--reuid={as_uid}", f"--regid={as_uid}", "--clear-groups", "--", *command]
        log_path = workdir / "server.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        processes.append(process)
        base_url = f"http://127.0.0.1:{port}"
        wait_until_serving(process, f"{base_url}/readyz", what="the API server", log=log_path.read_text,
                           timeout=SERVER_START_SECONDS)
        client = _client(base_url, key, ApiClient)
        client.other_tenant = _client(base_url, other_key)
        client.anonymous = _client(base_url, None)
        client.server_log = log_path
        client.server_pid = process.pid
        clients.append(client)
        return client

    yield start
    for client in clients:
        client.close()
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def api(start_api_server) -> ApiClient:
    """A client (tenant-a) of a shared server whose limits never throttle the suite."""
    return start_api_server(**UNTHROTTLED)
