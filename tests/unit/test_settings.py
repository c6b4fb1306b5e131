"""One settings mechanism for both programs: the parser, the shared limits, the README's tables."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from sandbox_api.config import markdown_table as api_table
from sandbox_api.config import settings_from_env
from sandbox_contract.request import ExecutionLimits
from sandbox_contract.settings import SettingError, check, group, read_settings, setting, settings_of
from sandbox_contract.settings import SettingError
from sandbox_operator.config import OperatorConfig
from sandbox_operator.config import markdown_table as operator_table

README = Path(__file__).resolve().parents[2] / "README.md"
# The limits each program reads from an environment.
BOTH_PROGRAMS = pytest.mark.parametrize("limits_from", [
    lambda environment: settings_from_env(environment).limits,
    lambda environment: OperatorConfig.from_env(environment).limits,
], ids=["api", "operator"])


@dataclass(frozen=True)
class Example:
    count: int = setting(3, "a count", minimum=1, maximum=9)
    verbose: bool = setting(False, "talk more")
    name: str | None = setting(None, "a name", env="EXAMPLE_NAME")
    labels: dict[str, str] = setting(help="labels", factory=dict)
    hosts: tuple[str, ...] = setting((), "hosts")
    limits: ExecutionLimits = group(ExecutionLimits, without={"max_processes"})

    def __post_init__(self) -> None:
        check(self)


def test_each_kind_is_parsed_from_its_variable():
    example = read_settings(Example, {
        "SANDBOX_COUNT": "7", "SANDBOX_VERBOSE": "yes", "EXAMPLE_NAME": "x", "SANDBOX_LABELS": '{"a": "b"}',
        "SANDBOX_HOSTS": " a, b ,", "SANDBOX_MAX_TIMEOUT_SECONDS": "90",
    })
    assert (example.count, example.verbose, example.name, example.labels, example.hosts) == (7, True, "x", {"a": "b"}, ("a", "b"))
    assert example.limits == ExecutionLimits(max_timeout_seconds=90)


def test_empty_variables_count_as_unset_and_overrides_come_last():
    assert read_settings(Example, {"SANDBOX_COUNT": "", "EXAMPLE_NAME": "", "SANDBOX_LABELS": ""}) == Example()
    example = read_settings(Example, {"SANDBOX_COUNT": "7", "SANDBOX_MAX_MEMORY_MB": "2048"}, count=8, max_memory_mb=512)
    assert (example.count, example.limits.max_memory_mb) == (8, 512)
    with pytest.raises(TypeError, match="max_processes"):
        read_settings(Example, {}, max_processes=4)  # left out of this group


@pytest.mark.parametrize("variable,value,fragment", [
    ("SANDBOX_COUNT", "seven", "SANDBOX_COUNT must be an integer, got 'seven'"),
    ("SANDBOX_COUNT", "0", "SANDBOX_COUNT must be at least 1, got 0"),
    ("SANDBOX_COUNT", "10", "SANDBOX_COUNT must be at most 9, got 10"),
    ("SANDBOX_VERBOSE", "maybe", "SANDBOX_VERBOSE must be true or false"),
    ("SANDBOX_LABELS", "[1]", "SANDBOX_LABELS must be a JSON object"),
    ("SANDBOX_LABELS", "{broken", "SANDBOX_LABELS must be a JSON object"),
])
def test_a_bad_value_names_its_variable(variable, value, fragment):
    with pytest.raises(SettingError, match=re.escape(fragment)):
        read_settings(Example, {variable: value})


def test_the_table_lists_groups_in_place_and_prints_unset_defaults():
    names = [declared.env for declared in settings_of(Example)]
    assert names[names.index("SANDBOX_HOSTS"):][:5] == [
        "SANDBOX_HOSTS", "SANDBOX_DEFAULT_TIMEOUT_SECONDS", "SANDBOX_MAX_TIMEOUT_SECONDS",
        "SANDBOX_DEFAULT_MEMORY_MB", "SANDBOX_MAX_MEMORY_MB",
    ]
    assert {declared.name: declared.shown for declared in settings_of(Example)}["name"] == "unset"


@BOTH_PROGRAMS
@pytest.mark.parametrize("environment,fragment", [
    ({"SANDBOX_MAX_MEMORY_MB": "lots"}, "SANDBOX_MAX_MEMORY_MB must be an integer, got 'lots'"),
    ({"SANDBOX_MAX_TIMEOUT_SECONDS": "-5"}, "SANDBOX_MAX_TIMEOUT_SECONDS must be at least 1, got -5"),
    ({"SANDBOX_DEFAULT_TIMEOUT_SECONDS": "90"},
     "SANDBOX_DEFAULT_TIMEOUT_SECONDS (90) must lie between 1 and SANDBOX_MAX_TIMEOUT_SECONDS (60)"),
    ({"SANDBOX_DEFAULT_MEMORY_MB": "2048", "SANDBOX_MAX_MEMORY_MB": "1024"},
     "SANDBOX_DEFAULT_MEMORY_MB (2048) must lie between 16 and SANDBOX_MAX_MEMORY_MB (1024)"),
])
def test_both_programs_refuse_the_same_limits_alike(limits_from, environment, fragment):
    with pytest.raises(SettingError, match=re.escape(fragment)):
        limits_from(environment)


@BOTH_PROGRAMS
def test_both_programs_read_the_same_limits(limits_from):
    environment = {"SANDBOX_DEFAULT_TIMEOUT_SECONDS": "20", "SANDBOX_MAX_TIMEOUT_SECONDS": "120",
                   "SANDBOX_DEFAULT_MEMORY_MB": "128", "SANDBOX_MAX_MEMORY_MB": "512"}
    assert limits_from(environment) == ExecutionLimits(default_timeout_seconds=20, max_timeout_seconds=120,
                                     default_memory_mb=128, max_memory_mb=512)


def test_the_operator_refuses_negative_numbers_and_names_the_variable():
    for environment in ({"SANDBOX_JOB_TTL_SECONDS": "-1"}, {"SANDBOX_PRIORITY": "high"}, {"SANDBOX_TOLERATIONS": "{}"}):
        with pytest.raises(SettingError, match=next(iter(environment))):
            OperatorConfig.from_env(environment)
    with pytest.raises(SettingError, match="SANDBOX_SETUP_DEADLINE_SECONDS"):
        OperatorConfig(setup_deadline_seconds=-1)


def test_the_operator_ignores_the_process_limit_the_kubelet_enforces():
    assert OperatorConfig.from_env({"SANDBOX_MAX_PROCESSES": "x"}).limits.max_processes == ExecutionLimits.max_processes
    assert "SANDBOX_MAX_PROCESSES" not in operator_table() and "SANDBOX_MAX_PROCESSES" in api_table()


def test_the_readme_configuration_tables_are_the_generated_ones():
    """README.md's Configuration section shows exactly the tables the two programs generate."""
    readme = README.read_text()
    section = readme[readme.index("## Configuration\n"):]
    section = section[:section.index("\n## ")]
    tables = [table.strip() for table in re.findall(r"(?m)^\|.*\|\n(?:\|.*\|\n?)*", section)]
    assert tables == [api_table(), operator_table()], (
        "README.md's configuration tables are out of date: paste sandbox_api.config.markdown_table() "
        "and sandbox_operator.config.markdown_table()"
    )
