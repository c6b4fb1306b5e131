"""`sandbox-operator`: run the kopf operator with the namespaces and peering from the environment."""

from __future__ import annotations

import argparse
import logging
import sys

import kopf

from sandbox_contract.settings import SettingError
from sandbox_operator.config import OperatorConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sandbox-operator",
        description="Turns SandboxExecution resources into locked-down Jobs. Configured by SANDBOX_* variables.",
    )
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    parser.add_argument("--log-format", choices=["json", "plain"], default="json", help="structured (json) by default")
    parser.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", help="kopf liveness endpoint URL")
    args = parser.parse_args(argv)
    try:
        config = OperatorConfig.from_env()
    except SettingError as error:
        print(f"sandbox-operator: {error}", file=sys.stderr)
        return 2
    kopf.configure(
        debug=args.verbose, verbose=args.verbose,
        log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.FULL,
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    import sandbox_operator.handlers  # noqa: F401  (registers the handlers with kopf)

    kopf.run(
        clusterwide=not config.namespaces,
        namespaces=config.namespaces,
        standalone=config.peering_name is None,
        peering_name=config.peering_name,
        liveness_endpoint=args.liveness or None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
