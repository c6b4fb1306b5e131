"""The in-sandbox runner and what its callers need to use it.

runner.py is the program that runs inside every sandbox (standard library only, shipped as a
single file); this package only tells the local backend and the operator where it is and how
to read what it prints. Protocol: docs/runner-protocol.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import MappingProxyType

from sandbox_runner.runner import (
    CONTROL_CHARACTERS,
    DEFAULT_LIMITS,
    RESULT_MARKER,
    empty_result,
    is_printable_name,
    longest_prefix,
    without_trailing_whitespace,
)

RUNNER_PATH = Path(__file__).with_name("runner.py")
# The runner's output caps (bytes, and a count of files): what every backend's results are held to.
OUTPUT_LIMITS = MappingProxyType(DEFAULT_LIMITS)
# The result document's fields, in the order the runner writes them.
RESULT_FIELDS = tuple(empty_result("error_setup", None))


def runner_command(runner_path: str, spec_path: str, *, python: str = "python3",
                   isolation_wait_seconds: int | None = None, remove_spec: bool = False) -> list[str]:
    """How the runner is started, on every backend: isolated from PYTHON* variables and the user's
    site (-I), and no site import at all (-S: it needs only the standard library). `spec_path` "-"
    reads the spec from stdin. With `isolation_wait_seconds` the runner first waits up to that long
    for evidence that the network is cut off, and runs nothing without it (the isolation gate). With
    `remove_spec` it deletes the spec file once read, before anything runs."""
    gate = [] if isolation_wait_seconds is None else ["--isolation-wait", str(isolation_wait_seconds)]
    removal = ["--remove-spec"] if remove_spec else []
    return [python, "-I", "-S", runner_path, *gate, *removal, spec_path]


class ResultLineError(ValueError):
    """The runner's output holds no readable result line."""


def read_result(output: str) -> dict:
    """The result document from the runner's stdout (or a pod log): the last marker line."""
    for line in reversed(output.splitlines()):
        if line.startswith(RESULT_MARKER):
            try:
                document = json.loads(line[len(RESULT_MARKER) :])
            except ValueError as error:
                raise ResultLineError(f"the runner's result line is not valid JSON: {error}") from None
            if not isinstance(document, dict):
                raise ResultLineError("the runner's result line is not a JSON object")
            return document
    raise ResultLineError("the runner printed no result line (it was killed, or never started)")
