"""Configuration read from SANDBOX_* variables: one declaration, one parser and one table for both
the HTTP API and the operator.

A setting is a dataclass field declared with `setting(default, help)`; its variable is
`SANDBOX_<NAME>` unless it says otherwise, and its kind is its annotation: `int` (with bounds),
`bool`, `str`, a JSON object (`dict`), a JSON array (`list`) or a comma-separated `tuple`, each maybe
`| None`. `group(cls)` nests another dataclass's settings (the limits both programs read), so its
variables are read and documented where it is used. An empty variable counts as unset: a chart
renders an unset value as "".
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Callable, Collection, Mapping
from dataclasses import MISSING, dataclass, field, fields
from functools import cache
from typing import Any

PREFIX = "SANDBOX_"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class SettingError(ValueError):
    """A setting holds a value the program cannot use; the message names its variable."""


def setting(default: Any = MISSING, help: str = "", *, env: str | None = None, minimum: int = 0,
            maximum: int | None = None, shown: str | None = None, factory: Callable[[], Any] | None = None,
            parse: Callable[[str], Any] | None = None) -> Any:
    """A dataclass field read from `env` (default SANDBOX_<NAME>).

    Integers below `minimum` or above `maximum` are refused; `shown` is the default as the table
    prints it; `parse` replaces the annotation's parser (it raises ValueError saying what is wanted).
    """
    metadata = {"help": help, "env": env, "minimum": minimum, "maximum": maximum, "shown": shown, "parse": parse}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def group(cls: type, *, without: Collection[str] = ()) -> Any:
    """A field holding a `cls` whose settings (but those `without`) are read as this class's own."""
    return field(default_factory=cls, metadata={"group": cls, "without": frozenset(without)})


@dataclass(frozen=True)
class Setting:
    """One declared setting: its field's name, its variable, its kind and its bounds."""

    name: str
    env: str
    help: str
    kind: type
    default: Any
    shown: str
    minimum: int
    maximum: int | None
    parse: Callable[[str], Any]

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def settings_of(cls: type, *, without: Collection[str] = ()) -> tuple[Setting, ...]:
    """The settings `cls` declares, its groups' included, in declaration order."""
    own = _own_settings(cls)
    found: list[Setting] = []
    for declared in fields(cls):
        if "group" in declared.metadata:
            found += settings_of(declared.metadata["group"], without=declared.metadata["without"])
        elif declared.name in own and declared.name not in without:
            found.append(own[declared.name])
    return tuple(found)


@cache
def _own_settings(cls: type) -> dict[str, Setting]:
    """The settings `cls` declares itself, by name (its groups' not included)."""
    hints = typing.get_type_hints(cls)
    return {declared.name: _setting_for(declared, hints[declared.name])
            for declared in fields(cls) if "help" in declared.metadata}


def _setting_for(declared, hint) -> Setting:
    meta = declared.metadata
    kind = _kind(hint)
    default = declared.default if declared.default_factory is MISSING else declared.default_factory()
    return Setting(
        name=declared.name, env=meta["env"] or PREFIX + declared.name.upper(), help=meta["help"], kind=kind,
        default=default, shown=meta["shown"] or ("unset" if default in (None, "") else str(default)),
        minimum=meta["minimum"], maximum=meta["maximum"], parse=meta["parse"] or _PARSERS[kind],
    )


def _kind(hint) -> type:
    """int, bool, str, dict, list or tuple: the annotation without its `| None` and parameters."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        (hint,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    kind = typing.get_origin(hint) or hint
    if kind not in _PARSERS:
        raise TypeError(f"a setting cannot be a {hint}")
    return kind


def variable(cls: type, name: str) -> str:
    """The variable that sets `cls`'s field `name`."""
    return _own_settings(cls)[name].env


def parse(declared: Setting, text: str) -> Any:
    """The value `text` gives the setting; SettingError names the variable and what it wants."""
    try:
        return declared.parse(text)
    except ValueError as error:
        raise SettingError(f"{declared.env} {error}, got {text!r}") from None


def check(instance: Any) -> None:
    """Refuse integers out of their bounds; a settings class calls this from its __post_init__."""
    for declared in _own_settings(type(instance)).values():
        value = getattr(instance, declared.name)
        if declared.kind is not int or value is None:
            continue
        if value < declared.minimum:
            raise SettingError(f"{declared.env} must be at least {declared.minimum}, got {value}")
        if declared.maximum is not None and value > declared.maximum:
            raise SettingError(f"{declared.env} must be at most {declared.maximum}, got {value}")


def read_settings(cls: type, env: Mapping[str, str], **overrides: Any) -> Any:
    """A `cls` from the variables in `env`, then `overrides` (by field name); unset ones keep defaults."""
    unknown = set(overrides) - {declared.name for declared in settings_of(cls)}
    if unknown:
        raise TypeError(f"{cls.__name__} has no setting {', '.join(sorted(unknown))}")
    return _build(cls, env, overrides, without=frozenset())


def _build(cls: type, env: Mapping[str, str], overrides: Mapping[str, Any], *, without: frozenset[str]) -> Any:
    values = {}
    for declared in fields(cls):
        if "group" in declared.metadata:
            values[declared.name] = _build(declared.metadata["group"], env, overrides,
                                           without=declared.metadata["without"])
    for declared in _own_settings(cls).values():
        if declared.name in without:
            continue
        if declared.name in overrides:
            values[declared.name] = overrides[declared.name]
        elif env.get(declared.env):
            values[declared.name] = parse(declared, env[declared.env])
    return cls(**values)


def markdown_table(cls: type, *, flags: bool = False) -> str:
    """The README's table of `cls`'s settings; `flags` adds the command-line flag of each."""
    head = ["flag", "environment variable"] if flags else ["variable"]
    head += ["default", "meaning"]
    rows = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    for declared in settings_of(cls):
        cells = [f"`{declared.flag}`"] if flags else []
        cells += [f"`{declared.env}`", f"`{declared.shown}`", declared.help]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError("must be an integer") from None


def _boolean(text: str) -> bool:
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise ValueError("must be true or false")


def _json(kind: type, name: str) -> Callable[[str], Any]:
    def parse_json(text: str) -> Any:
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = None
        if not isinstance(value, kind):
            raise ValueError(f"must be a JSON {name}")
        return value

    return parse_json


def comma_list(text: str) -> tuple[str, ...]:
    """The non-empty comma-separated items of `text`, stripped: how a `tuple` setting is read."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


_PARSERS: dict[type, Callable[[str], Any]] = {
    int: _integer, bool: _boolean, str: str, dict: _json(dict, "object"), list: _json(list, "array"), tuple: comma_list,
}
