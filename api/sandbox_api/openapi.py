"""The OpenAPI document of one app: what a request may hold, as this server decides it.

The request models are the same for every server; what a request may ask for is not. The document
FastAPI builds from the models is amended here with this server's bounds, defaults and languages,
and with the input-file rules of sandbox_contract.request, so that a schema-valid request is one the
server accepts and a generated client knows the limits. The server still enforces all of it itself,
with its own 400 messages; the models stay loose so those messages stay the server's.

What JSON Schema cannot say is left out: input files that collide once normalised (`a` and `./a`,
a file that is also another's directory, a file named as the language's code file), a name
component's length in UTF-8 bytes, sizes once stored, that languages match ignoring case, and that
`564.0`, an integer to JSON Schema, is not one to the server.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI

from sandbox_api.state import AppState
from sandbox_contract.request import (
    BASE64_PATTERN,
    ENV_NAME_PATTERN,
    INPUT_PATH_PATTERN,
    MAX_ARG_CHARS,
    MAX_ARGS,
    MAX_ENV_NAME_CHARS,
    MAX_ENV_VALUE_CHARS,
    MAX_ENV_VARIABLES,
    MAX_INPUT_FILES,
    MAX_PATH_CHARS,
    MAX_PATH_DEPTH,
    MAX_TESTS,
    RESERVED_ENV_NAMES,
    RESERVED_ENV_PREFIXES,
    TEST_NAME_PATTERN,
)

REQUEST_SCHEMA = "ExecuteRequest"

def install_openapi(app: FastAPI, state: AppState) -> None:
    """Serve `app`'s document with the request schema bound to `state`'s limits and languages."""
    build_generic = app.openapi  # FastAPI's own, from the models alone; it caches its document
    built: dict[tuple[str, ...], dict[str, Any]] = {}

    def openapi() -> dict[str, Any]:
        languages = offered_language_names(state)
        if languages not in built:
            built.clear()
            built[languages] = bind_request_schema(build_generic(), state, languages)
        return built[languages]

    app.openapi = openapi  # type: ignore[method-assign]


def offered_language_names(state: AppState) -> tuple[str, ...]:
    """Every name and alias a request may give, in the spelling the catalogue gives them.

    The backend's languages once it has started (the local one offers those installed on its host);
    the catalogue's before then, when no request is served anyway.
    """
    offered = state.backend.languages() or list(state.catalogue.languages.values())
    names = []
    for language in offered:
        names.extend(name.lower() for name in (language.name, *language.aliases))
    return tuple(dict.fromkeys(names))


def bind_request_schema(generic: dict[str, Any], state: AppState, languages: tuple[str, ...]) -> dict[str, Any]:
    """A copy of `generic` whose ExecuteRequest states this server's bounds, defaults and languages."""
    document = copy.deepcopy(generic)
    limits = state.service.limits  # the limits requests are resolved against
    properties = document["components"]["schemas"][REQUEST_SCHEMA]["properties"]
    properties["language"]["enum"] = list(languages)
    properties["language"]["description"] = (
        "A language name or alias (`GET /api/sandbox/languages`), matched ignoring case and surrounding "
        "whitespace."
    )
    for name, (low, default, high) in limits.bounds().items():
        field = properties[name]
        _branch(field, "integer").update(minimum=low, maximum=high)
        when_absent = "none" if not default else default
        field["description"] = f"{field['description'].split(';')[0]}, {low} to {high}; {when_absent} when absent or null."
    _state_input_file_rules(_branch(properties["files"], "object"))
    _state_test_rules(document["components"]["schemas"], _branch(properties["tests"], "array"))
    runtime_names = state.catalogue.env_names()
    _state_args_and_env_rules(_branch(properties["args"], "array"), _branch(properties["env"], "object"), runtime_names)
    return document


def _state_args_and_env_rules(args: dict[str, Any], env: dict[str, Any], runtime_names: frozenset[str]) -> None:
    """The rules of sandbox_contract.request.validate_args and validate_env, as JSON Schema; the
    runtimes' variables (the catalogue's env) are reserved too."""
    without_nul = r"^[^\u0000]*$"
    args.update(maxItems=MAX_ARGS)
    args["items"].update(maxLength=MAX_ARG_CHARS, pattern=without_nul)
    reserved = "|".join(sorted(RESERVED_ENV_NAMES | runtime_names)) + "|" + "|".join(
        f"{prefix}.*" for prefix in RESERVED_ENV_PREFIXES)
    env.update(maxProperties=MAX_ENV_VARIABLES, propertyNames={
        "maxLength": MAX_ENV_NAME_CHARS, "pattern": ENV_NAME_PATTERN, "not": {"pattern": f"^(?:{reserved})$"},
    })
    env["additionalProperties"].update(maxLength=MAX_ENV_VALUE_CHARS, pattern=without_nul)


def _state_input_file_rules(files: dict[str, Any]) -> None:
    """The rules of sandbox_contract.request.validate_file_path and file_bytes, as JSON Schema."""
    files.update(maxProperties=MAX_INPUT_FILES, propertyNames={
        "minLength": 1,
        "maxLength": MAX_PATH_CHARS,
        "pattern": INPUT_PATH_PATTERN,
        "description": f"A relative path of at most {MAX_PATH_DEPTH} names, none `..`; `.` and empty "
                       "names are dropped. No control characters, no backslash.",
    })
    encoded = next(branch for branch in files["additionalProperties"]["anyOf"] if "$ref" in branch)
    encoded.update({
        "if": {"properties": {"encoding": {"const": "base64"}}, "required": ["encoding"]},
        "then": {"properties": {"content": {"pattern": BASE64_PATTERN}}},
    })


def _state_test_rules(schemas: dict[str, Any], tests: dict[str, Any]) -> None:
    """The rules of sandbox_contract.request.validate_tests, as JSON Schema: at most MAX_TESTS cases,
    names without control characters, and never both tests and input_data."""
    tests["maxItems"] = MAX_TESTS
    _branch(schemas["TestCaseModel"]["properties"]["name"], "string")["pattern"] = TEST_NAME_PATTERN
    schemas[REQUEST_SCHEMA]["not"] = {
        "required": ["tests", "input_data"],
        "properties": {"tests": {"type": "array", "minItems": 1}, "input_data": {"type": "string"}},
    }


def _branch(schema: dict[str, Any], kind: str) -> dict[str, Any]:
    """The `kind` branch of an optional field's schema (`anyOf: [kind, null]`)."""
    return next(branch for branch in schema.get("anyOf", [schema]) if branch.get("type") == kind)
