"""Request and response models of the HTTP API (pydantic v2); unknown fields are refused."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sandbox_contract.catalogue import Language
from sandbox_contract.result import CompileResult, Phase, Result, TestResult, TestSummary
from sandbox_runner import is_printable_name

EXECUTION_ID_PATTERN = r"^exec-[0-9a-f]{20}$"


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EncodedFile(StrictModel):
    """A file's content with its encoding; binary files travel as base64."""

    # strict: JSON types exactly as the schema says (no "5" for 5, no true for 1).
    model_config = ConfigDict(extra="forbid", strict=True)

    content: str = Field(description="The file's content, as text or base64 per `encoding`.")
    encoding: Literal["utf-8", "base64"] = Field("utf-8", description="How `content` is encoded.")


FileValue = str | EncodedFile


class TestCaseModel(StrictModel):
    """One test case. Its expected output never enters the sandbox."""

    input: str = Field("", description="The program's stdin for this case.")
    expected_output: str = Field(description="What the program must print on stdout.")
    name: str | None = Field(None, max_length=128, description="Shown with the case's verdict.")


class ExecuteRequest(StrictModel):
    """Code to run, with its stdin, input files and limits."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {
                    "language": "python",
                    "code": "print(input())",
                    "input_data": "Hello Sandbox!",
                    "files": {"data.txt": "This is some data for the script."},
                }
            ]
        },
    )

    language: str = Field(min_length=1, max_length=64, description="A language name or alias, e.g. `python`.")
    code: str = Field(description="The program; written to the language's main file.")
    input_data: str | None = Field(None, description="Text fed to the program's standard input.")
    files: dict[str, FileValue] | None = Field(
        None,
        description="Relative path -> text, or `{content, encoding: base64}` for binary. No `..`, not absolute.",
    )
    args: list[str] | None = Field(None, description="Command-line arguments passed to the program after its code file.")
    env: dict[str, str] | None = Field(
        None, description="Variables added to the program's environment; the sandbox's own (PATH, HOME, TMPDIR, LANG, LC_*, LD_*) cannot be set.",
    )
    timeout_seconds: int | None = Field(None, description="Wall-clock limit in seconds; server default when absent.")
    max_memory_mb: int | None = Field(None, description="Memory limit in MB; server default when absent.")
    tests: list[TestCaseModel] | None = Field(
        None, description="Test cases: the program (compiled once) runs once per case, each with its own input, and "
                          "each gets a verdict. Not together with input_data.")
    comparison: Literal["trailing_whitespace", "exact"] | None = Field(
        None, description="How outputs are compared with expected_output: trailing_whitespace (the default) ignores "
                          "blanks at line ends and empty lines at the end; exact compares bytes.")
    cpu_time_seconds: int | None = Field(None, description="CPU-time limit of the program in seconds; server default when absent.")
    max_file_size_mb: int | None = Field(None, description="Largest file the program may write, in MB; server default when absent.")
    compile_timeout_seconds: int | None = Field(
        None, description="Wall-clock limit of the compile stage in seconds (compiled languages); server default when absent.")
    wait: bool = Field(True, description="Wait for the result (200); false returns 202 with the id at once.")


class AppliedLimits(StrictModel):
    """The limits the execution runs under: the request's, or the server's defaults."""

    timeout_seconds: int
    max_memory_mb: int
    cpu_time_seconds: int | None = Field(None, description="null: no CPU-time limit, the wall clock bounds the program.")
    max_file_size_mb: int
    compile_timeout_seconds: int | None = Field(None, description="null: the language does not compile.")
    deadline_seconds: int = Field(description="The whole execution's wall clock: the compile stage and every run.")


class ExecutionResult(StrictModel):
    """The state or outcome of one execution; its fields are sandbox_contract.result.Result's."""

    execution_id: str = Field(pattern=EXECUTION_ID_PATTERN, examples=["exec-3f2a9c0b1d2e3f405162"])
    language: str
    status: Phase
    reason: str | None = Field(None, description="Why the execution did not complete, in words.")
    stdout: str = ""
    stderr: str = ""
    exit_code: int | None = Field(None, description="Exit status, or 128+N when killed by signal N.")
    signal: str | None = None
    oom_killed: bool = False
    duration_ms: int | None = None
    memory_used_mb: int | None = None
    output_files: dict[str, FileValue] = Field(default_factory=dict)
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    output_files_truncated: bool = False
    cpu_time_ms: int | None = Field(None, description="CPU time the program used (user and system).")
    limit_exceeded: Literal["wall_time", "cpu_time", "memory", "file_size"] | None = Field(
        None, description="The limit that ended the run (file_size: a write hit it).")
    compile: CompileResult | None = Field(None, description="The compile stage; null for a language that does not compile.")
    tests: list[TestResult] | None = Field(None, description="One result per test case of the request, in order.")
    test_summary: TestSummary | None = Field(None, description="Passed of total, and the first case that did not pass.")
    limits: AppliedLimits | None = Field(None, description="The limits applied; null until the execution is taken up.")

    @model_validator(mode="after")
    def _drop_unsafe_output_names(self) -> ExecutionResult:
        """Output files whose names are unsafe to show are never returned: dropped, and flagged."""
        safe = {name: value for name, value in self.output_files.items() if is_printable_name(name)}
        if len(safe) != len(self.output_files):
            self.output_files = safe
            self.output_files_truncated = True
        return self

    @property
    def finished(self) -> bool:
        return self.status.finished

    @classmethod
    def of(cls, result: Result, *, execution_id: str, language: str) -> ExecutionResult:
        """The API's answer for a result, whichever backend produced it."""
        return cls(**result.to_document(), execution_id=execution_id, language=language)


class ExecutionAccepted(StrictModel):
    """An execution accepted without waiting; poll GET /api/sandbox/executions/{id}."""

    execution_id: str = Field(pattern=EXECUTION_ID_PATTERN)
    status: Phase


class LanguageInfo(StrictModel):
    name: str
    aliases: list[str]
    version: str = Field(description="The version of the toolchain that actually runs the code.")
    compiled: bool = Field(description="Whether a compile stage runs before the program (its output is `compile`).")

    @classmethod
    def of(cls, language: Language, version: str) -> LanguageInfo:
        return cls(name=language.name, aliases=list(language.aliases), version=version, compiled=language.compiled)


class LanguageList(StrictModel):
    languages: list[LanguageInfo]


class ErrorResponse(StrictModel):
    """Every error has this shape."""

    error: str = Field(examples=["Unsupported language: 'cobol'"])


class HealthStatus(StrictModel):
    status: Literal["ok", "unavailable"]
    backend: str | None = None
    detail: str | None = None
