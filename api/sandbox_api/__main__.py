"""`sandbox-api`: serve the API (default), or `sandbox-api new-key TENANT` to mint a key."""

from __future__ import annotations

import argparse
import logging
import sys

import uvicorn

from sandbox_api.app import create_app
from sandbox_api.auth import KeyConfigError, KeyRing, TENANT_PATTERN, digest, generate_key
from sandbox_api.config import add_arguments, settings_from_args
from sandbox_api.protocol import deadline_protocol

log = logging.getLogger("sandbox_api")
DEFAULT_TENANT = "default"


def new_key(tenant: str) -> int:
    if not TENANT_PATTERN.match(tenant):
        print(f"error: tenant {tenant!r} must be lowercase letters, digits and '-'", file=sys.stderr)
        return 2
    key = generate_key()
    print(f"key (give to the client; shown once): {key}")
    print(f"keys-file line (give to the server):  {tenant}:{digest(key)}")
    return 0


SHUTDOWN_GRACE_SECONDS = 5


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["new-key"]:
        if len(argv) != 2:
            print("usage: sandbox-api new-key TENANT", file=sys.stderr)
            return 2
        return new_key(argv[1])
    parser = argparse.ArgumentParser(prog="sandbox-api", description="Serve the code execution sandbox API.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
        keys = KeyRing.load(keys_file=settings.api_keys_file, keys_env=settings.api_keys)
    except (ValueError, OSError, KeyConfigError) as error:
        parser.error(str(error))
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.insecure_no_auth:
        banner = "!" * 78
        log.warning("\n%s\n!! AUTHENTICATION IS DISABLED (--insecure-no-auth): anyone who can reach\n"
                    "!! %s:%s can run code here. Use this for local development only.\n%s",
                    banner, settings.host, settings.port, banner)
    elif not len(keys):
        key = generate_key()
        keys.add(key, DEFAULT_TENANT)
        # Printed once, like Jupyter's token; it is not stored anywhere.
        print(f"\nNo API key configured; generated one for tenant '{DEFAULT_TENANT}' (valid until restart):\n\n"
              f"    {key}\n\n    curl -H 'Authorization: Bearer {key}' http://{settings.host}:{settings.port}/api/sandbox/languages\n",
              flush=True)
    app = create_app(settings, keys=keys)
    slow_clients = app.state.sandbox.metrics.slow_clients
    protocol = deadline_protocol(
        header_timeout_s=settings.header_timeout_seconds, body_timeout_s=settings.body_timeout_seconds,
        on_timeout=lambda phase: slow_clients.labels(phase).inc(),
    )
    # On SIGTERM, requests still open after the grace are cancelled; then the backend stops (bounded).
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level, access_log=False,
                http=protocol, timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
