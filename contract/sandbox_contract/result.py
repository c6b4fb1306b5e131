"""The outcome of an execution: its phase, and the result document with one field list for every
form it takes.

The runner writes the result document (sandbox_runner.runner.empty_result names its fields); the
HTTP API returns the same fields (snake_case) plus the execution's id and language; a
SandboxExecution's status holds them in camelCase, `status` as `phase`. `Result` is the one
constructor both backends build results through, and the one place those forms are converted.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum

from sandbox_contract.request import EffectiveLimits


class Phase(StrEnum):
    """Where an execution is. The API's `status`, the resource's `status.phase`, the runner's `status`."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    ERROR_RUNTIME = "error_runtime"
    TIMEOUT = "timeout"
    ERROR_SETUP = "error_setup"

    @property
    def finished(self) -> bool:
        return self in TERMINAL_PHASES


# The phases an execution ends in; the runner reports only these.
TERMINAL_PHASES = frozenset({Phase.COMPLETED, Phase.ERROR_RUNTIME, Phase.TIMEOUT, Phase.ERROR_SETUP})


@dataclass(frozen=True)
class OutputFile:
    """A file the program left in its work directory: text, or base64 for bytes that are not UTF-8."""

    content: str
    encoding: str = "utf-8"


@dataclass(frozen=True)
class Result:
    """The state or outcome of one execution, whichever backend ran it."""

    status: Phase
    reason: str | None = None
    exit_code: int | None = None
    signal: str | None = None
    oom_killed: bool = False
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    duration_ms: int | None = None
    memory_used_mb: int | None = None
    output_files: dict[str, OutputFile] = field(default_factory=dict)
    output_files_truncated: bool = False
    # What the execution ran under; None while the operator has not taken it up yet.
    limits: EffectiveLimits | None = None

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_PHASES

    @classmethod
    def from_runner(cls, document: dict, limits: EffectiveLimits | None) -> Result:
        """The result from the runner's result document (docs/runner-protocol.md)."""
        values = {name: document[name] for name in FIELDS if document.get(name) is not None}
        values["status"] = Phase(document["status"])
        values["output_files"] = {
            name: OutputFile(**value) if isinstance(value, dict) else OutputFile(str(value))
            for name, value in sorted((document.get("output_files") or {}).items())
        }
        return cls(**values, limits=limits)

    @classmethod
    def failure(cls, status: Phase, reason: str, *, oom_killed: bool = False,
                limits: EffectiveLimits | None = None) -> Result:
        """An execution that ended without a result from the runner."""
        return cls(status=Phase(status), reason=reason, oom_killed=oom_killed, limits=limits)

    def to_document(self) -> dict:
        """The result document: the runner's fields (as the HTTP API returns them) and `limits`."""
        document = {name: getattr(self, name) for name in FIELDS}
        document["status"] = str(self.status)
        document["output_files"] = {
            name: file.content if file.encoding == "utf-8" else dataclasses.asdict(file)
            for name, file in self.output_files.items()
        }
        document["limits"] = self.limits.as_dict() if self.limits else None
        return document

    def to_status(self) -> dict:
        """The fields of a SandboxExecution's status (camelCase; output files as a list)."""
        status = {STATUS_NAMES[name]: getattr(self, name) for name in FIELDS}
        status["phase"] = str(self.status)
        status["reason"] = self.reason or ""
        status["outputFiles"] = [
            {"name": name, "content": file.content, "encoding": file.encoding}
            for name, file in self.output_files.items()
        ]
        if self.limits is not None:
            status["limits"] = limits_to_status(self.limits)
        return status

    @classmethod
    def from_status(cls, status: dict) -> Result:
        """The result a SandboxExecution's status holds (pending before the operator writes one)."""
        values = {name: status[STATUS_NAMES[name]] for name in FIELDS if status.get(STATUS_NAMES[name]) is not None}
        values["status"] = Phase(status.get("phase") or Phase.PENDING)
        values["reason"] = status.get("reason") or None
        values["output_files"] = {
            item["name"]: OutputFile(item["content"], item.get("encoding", "utf-8"))
            for item in status.get("outputFiles") or []
        }
        return cls(**values, limits=limits_from_status(status.get("limits")))


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(part.title() for part in rest)


# The result document's fields as the runner and the HTTP API name them, in order (a unit test keeps
# them equal to the runner's); `limits` is added by the backends, which resolved them.
FIELDS = tuple(item.name for item in dataclasses.fields(Result) if item.name != "limits")
# ... and as a SandboxExecution's status does.
STATUS_NAMES = {name: "phase" if name == "status" else _camel(name) for name in (*FIELDS, "limits")}


def limits_to_status(limits: EffectiveLimits) -> dict[str, int]:
    return {_camel(name): value for name, value in limits.as_dict().items()}


def limits_from_status(value: dict | None) -> EffectiveLimits | None:
    """The effective limits a status records; None when it has none (yet)."""
    if not value:
        return None
    return EffectiveLimits(**{item.name: value[_camel(item.name)] for item in dataclasses.fields(EffectiveLimits)})
