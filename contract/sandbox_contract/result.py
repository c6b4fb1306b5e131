"""The outcome of an execution: its phase, and the result document with one field list for every
form it takes.

The runner writes the result document (sandbox_runner.runner.empty_result names its fields); the
HTTP API returns the same fields (snake_case) plus the execution's id and language; a
SandboxExecution's status holds them in camelCase, `status` as `phase`. `Result` is the one
constructor both backends build results through, and the one place those forms are converted.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from enum import StrEnum

from sandbox_contract.request import EffectiveLimits, TestCase
from sandbox_runner import without_trailing_whitespace


class Phase(StrEnum):
    """Where an execution is. The API's `status`, the resource's `status.phase`, the runner's `status`."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    ERROR_RUNTIME = "error_runtime"
    TIMEOUT = "timeout"
    ERROR_SETUP = "error_setup"
    ERROR_COMPILE = "error_compile"

    @property
    def finished(self) -> bool:
        return self in TERMINAL_PHASES


# The phases an execution ends in; the runner reports only these.
TERMINAL_PHASES = frozenset({Phase.COMPLETED, Phase.ERROR_RUNTIME, Phase.TIMEOUT, Phase.ERROR_SETUP,
                             Phase.ERROR_COMPILE})


@dataclass(frozen=True)
class OutputFile:
    """A file the program left in its work directory: text, or base64 for bytes that are not UTF-8."""

    content: str
    encoding: str = "utf-8"


@dataclass(frozen=True)
class CompileResult:
    """How the compile stage went, for a language that compiles."""

    exit_code: int | None = None
    signal: str | None = None
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    duration_ms: int | None = None


class Verdict(StrEnum):
    """How one test case went. A cut output is never a wrong answer: it is output_limit."""

    PASSED = "passed"
    WRONG_ANSWER = "wrong_answer"
    TIMEOUT = "timeout"
    ERROR_RUNTIME = "error_runtime"
    MEMORY_LIMIT = "memory_limit"
    OUTPUT_LIMIT = "output_limit"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class TestResult:
    """One test case's run and its verdict."""

    __test__ = False  # not a pytest class

    verdict: Verdict
    name: str | None = None
    reason: str | None = None
    exit_code: int | None = None
    signal: str | None = None
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    duration_ms: int | None = None
    memory_used_mb: int | None = None
    cpu_time_ms: int | None = None
    limit_exceeded: str | None = None

    @classmethod
    def judge(cls, run: dict, case: TestCase, comparison: str) -> TestResult:
        """The verdict on the runner's report of one run (docs/runner-protocol.md) against the case."""
        values = {item.name: run[item.name] for item in dataclasses.fields(cls)
                  if item.name not in ("verdict", "name") and run.get(item.name) is not None}
        return cls(verdict=_verdict(run, case, comparison), name=case.name, **values)


def _verdict(run: dict, case: TestCase, comparison: str) -> Verdict:
    if run["status"] == "skipped":
        return Verdict.SKIPPED
    if run.get("oom_killed") or run.get("limit_exceeded") == "memory":
        return Verdict.MEMORY_LIMIT
    if run["status"] == "timeout":
        return Verdict.TIMEOUT
    if run["status"] != "completed":
        return Verdict.ERROR_RUNTIME
    digests = run.get("stdout_sha256")
    if digests is None:  # the output passed its cap: what was cut cannot be compared
        return Verdict.OUTPUT_LIMIT
    expected = case.expected_output.encode("utf-8", "surrogatepass")
    if comparison == "trailing_whitespace":
        expected = without_trailing_whitespace(expected)
    return Verdict.PASSED if hashlib.sha256(expected).hexdigest() == digests[comparison] else Verdict.WRONG_ANSWER


@dataclass(frozen=True)
class TestSummary:
    __test__ = False  # not a pytest class

    passed: int
    total: int
    # The first test case that did not pass: {index, name, verdict}; None when all passed.
    first_failure: dict | None = None

    @classmethod
    def of(cls, tests: tuple[TestResult, ...]) -> TestSummary:
        failed = [(index, test) for index, test in enumerate(tests) if test.verdict != Verdict.PASSED]
        first = None if not failed else {"index": failed[0][0], "name": failed[0][1].name,
                                         "verdict": str(failed[0][1].verdict)}
        return cls(passed=len(tests) - len(failed), total=len(tests), first_failure=first)


def to_camel(part: object) -> dict:
    """A result part (a dataclass) as a status holds it: camelCase names."""
    return {camel_case(name): value for name, value in dataclasses.asdict(part).items()}


def from_camel(cls: type, status: dict) -> object:
    return cls(**{item.name: status[camel_case(item.name)] for item in dataclasses.fields(cls)
                  if status.get(camel_case(item.name)) is not None})


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
    cpu_time_ms: int | None = None
    # The limit that ended the run: wall_time, cpu_time, memory, file_size (a write hit it); or None.
    limit_exceeded: str | None = None
    compile: CompileResult | None = None
    # With test cases: one result each, and their summary (the run's own fields stay empty).
    tests: tuple[TestResult, ...] | None = None
    test_summary: TestSummary | None = None
    # What the execution ran under; None while the operator has not taken it up yet.
    limits: EffectiveLimits | None = None

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_PHASES

    @classmethod
    def from_runner(cls, document: dict, limits: EffectiveLimits | None, tests: tuple[TestCase, ...] = (),
                    comparison: str = "trailing_whitespace") -> Result:
        """The result from the runner's result document (docs/runner-protocol.md); with the request's
        test cases, their verdicts."""
        values = {name: document[name] for name in FIELDS if document.get(name) is not None}
        values["status"] = Phase(document["status"])
        values["output_files"] = {
            name: OutputFile(**value) if isinstance(value, dict) else OutputFile(str(value))
            for name, value in sorted((document.get("output_files") or {}).items())
        }
        if document.get("compile"):
            values["compile"] = CompileResult(**document["compile"])
        if document.get("tests") is not None:
            if len(document["tests"]) != len(tests):
                raise ValueError(f"the runner reported {len(document['tests'])} tests, the request has {len(tests)}")
            judged = tuple(TestResult.judge(run, case, comparison) for run, case in zip(document["tests"], tests))
            values["tests"], values["test_summary"] = judged, TestSummary.of(judged)
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
        for name in ("compile", "test_summary"):
            document[name] = dataclasses.asdict(getattr(self, name)) if getattr(self, name) else None
        document["tests"] = None if self.tests is None else [dataclasses.asdict(test) for test in self.tests]
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
        for name in ("compile", "test_summary"):
            status[STATUS_NAMES[name]] = to_camel(getattr(self, name)) if getattr(self, name) else None
        status["tests"] = None if self.tests is None else [to_camel(test) for test in self.tests]
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
        if status.get("compile"):
            values["compile"] = from_camel(CompileResult, status["compile"])
        if status.get("tests") is not None:
            values["tests"] = tuple(from_camel(TestResult, test) for test in status["tests"])
            summary = from_camel(TestSummary, status["testSummary"])
            if summary.first_failure is not None:  # a merge patch drops null members: the name may be gone
                summary = dataclasses.replace(summary, first_failure={"name": None, **summary.first_failure})
            values["test_summary"] = summary
        return cls(**values, limits=limits_from_status(status.get("limits")))


def camel_case(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(part.title() for part in rest)


# The result document's fields as the runner and the HTTP API name them, in order (a unit test keeps
# them equal to the runner's); `limits` is added by the backends, which resolved them.
FIELDS = tuple(item.name for item in dataclasses.fields(Result) if item.name not in ("limits", "test_summary"))
# ... and as a SandboxExecution's status does.
STATUS_NAMES = {name: "phase" if name == "status" else camel_case(name) for name in (*FIELDS, "test_summary", "limits")}


def limits_to_status(limits: EffectiveLimits) -> dict[str, int]:
    return {camel_case(name): value for name, value in limits.as_dict().items() if value is not None}


def limits_from_status(value: dict | None) -> EffectiveLimits | None:
    """The effective limits a status records; None when it has none (yet)."""
    if not value:
        return None
    return EffectiveLimits(**{item.name: value[camel_case(item.name)] for item in dataclasses.fields(EffectiveLimits)
                              if camel_case(item.name) in value})
