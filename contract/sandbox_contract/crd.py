"""The SandboxExecution resource as the operator and the API's Kubernetes backend share it.

Its names, labels, annotations and condition types; its spec written from a request and read back
into one; and the sizes the API server will store, so neither side writes what etcd would refuse.
The CRD itself is charts/code-sandbox/crds/sandboxexecutions.yaml (the single source; manifests/ is
rendered from the chart), and a unit test checks its status schema against `Result`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import zlib

from sandbox_contract.catalogue import Catalogue
from sandbox_contract.request import (
    COMPARISONS,
    LIMIT_NAMES,
    ExecutionLimits,
    ExecutionRequest,
    InputFile,
    TestCase,
    resolve_request,
)
from sandbox_contract.result import Phase, camel_case

GROUP = "sandbox.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "SandboxExecution"
PLURAL = "sandboxexecutions"

# Condition types. `kubectl wait --for=condition=Finished` waits for any outcome;
# `--for=condition=Succeeded` only for exit code 0.
CONDITION_STARTED = "Started"
CONDITION_FINISHED = "Finished"
CONDITION_SUCCEEDED = "Succeeded"

# Condition reasons (CamelCase, as Kubernetes requires) for each terminal phase.
CONDITION_REASONS = {
    Phase.COMPLETED: "Completed",
    Phase.ERROR_RUNTIME: "RuntimeError",
    Phase.TIMEOUT: "Timeout",
    Phase.ERROR_SETUP: "SetupError",
    Phase.ERROR_COMPILE: "CompileError",
}

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "sandbox-operator"
LABEL_EXECUTION = f"{GROUP}/execution"
LABEL_LANGUAGE = f"{GROUP}/language"
# Every sandbox pod carries this label; the namespace's default-deny NetworkPolicy selects it.
LABEL_SANDBOX = f"{GROUP}/sandbox"
# The API records the tenant as a hash (never the key) so GET can refuse another tenant's execution.
LABEL_TENANT = f"{GROUP}/tenant"

# The operator records the size of the stored status (as the API server serialises it) here, so the
# API can sum a tenant's retained result bytes from a metadata-only LIST.
ANNOTATION_RESULT_BYTES = f"{GROUP}/result-bytes"

NETWORK_POLICY_NAME = "sandbox-default-deny"
CHILD_PREFIX = "sbx-"

_LABEL_VALUE_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def child_name(execution_name: str) -> str:
    """The ConfigMap's and Job's name: deterministic, so a restarted operator gets 409, not a twin."""
    return CHILD_PREFIX + execution_name


def tenant_label_value(tenant: str) -> str:
    """A label value identifying the tenant without revealing it (label values max 63 chars)."""
    return hashlib.sha256(tenant.encode("utf-8")).hexdigest()[:40]


def label_value(text: str) -> str:
    """`text` as a valid label value: unsafe characters replaced, at most 63 characters."""
    cleaned = _LABEL_VALUE_UNSAFE.sub("_", text)[:63].strip("_.-")
    return cleaned or "unknown"


# --- the spec ------------------------------------------------------------------------------------


def execution_spec(request: ExecutionRequest, *, retention_seconds: int) -> dict:
    """A SandboxExecution's spec for a resolved request (the limits written resolved)."""
    spec = {
        "language": request.language.name,
        "code": request.code,
        "files": [{"name": f.path, "content": f.content, "encoding": f.encoding} for f in request.files],
        **{camel_case(name): getattr(request.limits, name) for name in LIMIT_NAMES
           if getattr(request.limits, name) is not None},
        "ttlSecondsAfterFinished": retention_seconds,
    }
    if request.stdin is not None:
        spec["stdin"] = request.stdin
    if request.args:
        spec["args"] = list(request.args)
    if request.env:
        spec["env"] = [{"name": name, "value": value} for name, value in request.env]
    if request.tests:
        spec["tests"] = [{key: value for key, value in (("name", case.name), ("input", case.input),
                                                         ("expectedOutput", case.expected_output)) if value is not None}
                         for case in request.tests]
        spec["comparison"] = request.comparison
    return spec


# --- inputs in a ConfigMap of their own ----------------------------------------------------------

# A request's inputs too large to sit in the resource beside a full status go into a ConfigMap the
# spec names (`inputsConfigMap`): these spec fields, as gzip-compressed JSON under INPUTS_KEY.
INPUT_FIELDS = ("code", "stdin", "files", "args", "env", "tests")
INPUTS_KEY = "inputs.json.gz"
INPUTS_PREFIX = "sbx-inputs-"
# What the API server lets one ConfigMap hold (its data and binaryData together), less room for the rest.
CONFIGMAP_DATA_BYTES = 1024 * 1024 - 16 * 1024


class InputsError(ValueError):
    """A spec's inputs ConfigMap cannot be used; the message says why."""


def inputs_name(execution_name: str) -> str:
    return INPUTS_PREFIX + execution_name


def compress(value: object) -> bytes:
    """`value` as gzip-compressed UTF-8 JSON: how specs and inputs travel in ConfigMaps."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return zlib.compress(text.encode("utf-8"), wbits=31)


def decompress(data: bytes, *, max_bytes: int) -> object:
    """The JSON that `compress` made, refusing to inflate past `max_bytes` (a small ConfigMap of
    zeros would otherwise fill the operator's memory)."""
    inflater = zlib.decompressobj(wbits=31)
    try:
        text = inflater.decompress(data, max_bytes + 1)
    except zlib.error as error:
        raise InputsError(f"not gzip-compressed data: {error}") from None
    if len(text) > max_bytes or inflater.unconsumed_tail:
        raise InputsError(f"more than {max_bytes} bytes once decompressed")
    if not inflater.eof:
        raise InputsError("the compressed data is cut short")
    try:
        return json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise InputsError(f"not UTF-8 JSON: {error}") from None


def split_inputs(spec: dict, execution_name: str) -> tuple[dict, dict]:
    """A spec naming its inputs ConfigMap, and those inputs (INPUT_FIELDS taken out of `spec`)."""
    inputs = {field: spec[field] for field in INPUT_FIELDS if field in spec}
    rest = {key: value for key, value in spec.items() if key not in inputs}
    return {**rest, "inputsConfigMap": inputs_name(execution_name)}, inputs


def inputs_configmap(execution: dict, compressed: bytes) -> dict:
    """The ConfigMap holding an execution's inputs (`compress`ed), owned by it: deleted with it, and
    only ever read for it (merge_inputs checks the owner, so no spec can name someone else's ConfigMap)."""
    metadata = execution["metadata"]
    owner = {"apiVersion": API_VERSION, "kind": KIND, "name": metadata["name"], "uid": metadata["uid"],
             "blockOwnerDeletion": False}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": execution["spec"]["inputsConfigMap"], "ownerReferences": [owner],
                     "labels": {LABEL_MANAGED_BY: MANAGED_BY, LABEL_EXECUTION: metadata["name"]}},
        "immutable": True,
        "binaryData": {INPUTS_KEY: base64.b64encode(compressed).decode("ascii")},
    }


def merge_inputs(execution: dict, configmap: dict) -> dict:
    """The execution's whole spec: its own fields and those of its inputs ConfigMap, which must be
    owned by this very execution (its uid) and hold INPUTS_KEY; InputsError says what is wrong."""
    name = configmap["metadata"]["name"]
    uid = execution["metadata"]["uid"]
    if not any(owner.get("uid") == uid for owner in configmap["metadata"].get("ownerReferences") or ()):
        raise InputsError(f"the ConfigMap {name!r} is not owned by this SandboxExecution (uid {uid}): "
                          f"add it to the ConfigMap's ownerReferences")
    encoded = (configmap.get("binaryData") or {}).get(INPUTS_KEY)
    if encoded is None:
        raise InputsError(f"the ConfigMap {name!r} has no binaryData key {INPUTS_KEY!r}")
    try:
        # Twice the API's limit: room for the keys around the inputs, and a bound on memory all the same.
        inputs = decompress(base64.b64decode(encoded, validate=True), max_bytes=2 * MAX_INPUT_BYTES)
    except (InputsError, ValueError) as error:
        raise InputsError(f"the ConfigMap {name!r}: {INPUTS_KEY}: {error}") from None
    if not isinstance(inputs, dict) or set(inputs) - set(INPUT_FIELDS):
        raise InputsError(f"the ConfigMap {name!r}: {INPUTS_KEY} must be an object with only the fields "
                          f"{', '.join(INPUT_FIELDS)}")
    spec = {key: value for key, value in execution["spec"].items() if key != "inputsConfigMap"}
    return {**spec, **inputs}


def request_from_spec(spec: dict, *, catalogue: Catalogue, limits: ExecutionLimits) -> ExecutionRequest:
    """The request a SandboxExecution's spec makes; InvalidSpecError says what is wrong with it."""
    return resolve_request(
        catalogue=catalogue, limits=limits, language=spec.get("language", ""), code=spec.get("code", ""),
        stdin=spec.get("stdin"), requested_limits={name: spec.get(camel_case(name)) for name in LIMIT_NAMES},
        args=spec.get("args") or (), env={item["name"]: item.get("value", "") for item in spec.get("env") or []},
        tests=tests_from_spec(spec)[0], comparison=spec.get("comparison"),
        files=[InputFile(path=item["name"], content=item.get("content", ""), encoding=item.get("encoding", "utf-8"))
               for item in spec.get("files") or []],
    )


def tests_from_spec(spec: dict) -> tuple[tuple[TestCase, ...], str]:
    """The test cases of a SandboxExecution's spec and how outputs are compared."""
    cases = tuple(TestCase(input=item.get("input", ""), expected_output=item.get("expectedOutput", ""), name=item.get("name"))
                  for item in spec.get("tests") or [])
    return cases, spec.get("comparison") or COMPARISONS[0]


# --- sizes as the API server stores them -----------------------------------------------------------

# The most a status may take, both as the API server stores it and as the operator sends it: well
# under etcd's request limit (1.5 MiB by default, for the whole object), leaving room for the spec.
STATUS_BUDGET_BYTES = 1024 * 1024
# The inputs (INPUT_FIELDS) as a spec stores them, at most, for them to sit in the resource: with its
# status and metadata, the object stays under etcd's 1.5 MiB. Larger inputs get a ConfigMap.
MAX_INLINE_INPUT_BYTES = 1536 * 1024 - STATUS_BUDGET_BYTES - 128 * 1024
# The inputs at most, on both backends alike: the API refuses more (413). Any 1 MiB request body
# fits, unless a fifth of it is <, > or &. Compressed, they fit in one ConfigMap (CONFIGMAP_DATA_BYTES)
# unless they are random printable text (base64 of random bytes deflates to 0.76 of its size).
MAX_INPUT_BYTES = 1280 * 1024
# Characters Go's encoding/json writes as a six-byte \u escape although they are one or three
# bytes of UTF-8, so the extra bytes each costs in storage.
_GO_ESCAPE_EXTRA = {"<": 5, ">": 5, "&": 5, "\u2028": 3, "\u2029": 3}


def stored_size(value: object) -> int:
    """Bytes of `value` as JSON the way the API server stores it (Go's encoding/json).

    Non-ASCII is written as UTF-8; `<`, `>`, `&`, U+2028 and U+2029 as \\u escapes; control
    characters as \\n-style or \\u00XX escapes; invalid UTF-8 (a lone surrogate here) as U+FFFD.
    Python's compact UTF-8 JSON agrees on everything but the five characters of _GO_ESCAPE_EXTRA.
    """
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return len(text.encode("utf-8", "surrogatepass")) + sum(text.count(char) * extra for char, extra in _GO_ESCAPE_EXTRA.items())


def sent_size(value: object) -> int:
    """Bytes of `value` in the request body the Kubernetes client sends (json.dumps: ASCII-only escapes)."""
    return len(json.dumps(value))


def stored_request_size(request: ExecutionRequest) -> int:
    """What the request's code, stdin, files, args, env and test cases take once stored (compared with
    MAX_INPUT_BYTES and MAX_INLINE_INPUT_BYTES)."""
    return stored_size([request.code, request.stdin, [(f.path, f.content) for f in request.files],
                        request.args, request.env, [(t.name, t.input, t.expected_output) for t in request.tests]])
