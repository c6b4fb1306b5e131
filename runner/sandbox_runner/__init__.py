"""The in-sandbox runner and what its callers need to use it.

runner.py is the program that runs inside every sandbox (standard library only, shipped as a
single file); this package only tells the local backend and the operator where it is and how
to read what it prints. Protocol: docs/runner-protocol.md.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from sandbox_runner.runner import CONTROL_CHARACTERS, RESULT_MARKER, is_printable_name, longest_prefix

RUNNER_PATH = Path(__file__).with_name("runner.py")
# How the runner is started: isolated from PYTHON* variables and the user's site, and no site
# import at all (it needs only the standard library).
RUNNER_FLAGS = ("-I", "-S")


def compile_runner(interpreter: str, directory: str | Path) -> Path:
    """runner.py compiled to directory/runner.pyc by the interpreter that will run it.

    `python3 -I -S runner.pyc SPEC` skips compiling the source on every execution, about a third
    of the runner's start-up. The .pyc only works with the same Python minor version.
    """
    target = Path(directory) / "runner.pyc"
    compile_source = "import py_compile, sys; py_compile.compile(sys.argv[1], cfile=sys.argv[2], doraise=True)"
    subprocess.run([interpreter, *RUNNER_FLAGS, "-c", compile_source, str(RUNNER_PATH), str(target)],
                   check=True, capture_output=True)
    return target


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
