"""The CRD manifest matches the contract the operator and the API code against."""

from __future__ import annotations

import base64
import dataclasses
import gzip
from pathlib import Path

import pytest
import yaml

from sandbox_contract import crd
from sandbox_contract.request import LIMIT_NAMES, EffectiveLimits
from sandbox_contract.result import (
    FIELDS,
    STATUS_NAMES,
    TERMINAL_PHASES,
    CompileResult,
    Phase,
    TestResult,
    TestSummary,
    camel_case,
)
from sandbox_contract.settings import SettingError
from sandbox_operator.config import OperatorConfig

CRD = yaml.safe_load((Path(__file__).parents[2] / "charts" / "code-sandbox" / "crds" / "sandboxexecutions.yaml").read_text())
VERSION = CRD["spec"]["versions"][0]
SCHEMA = VERSION["schema"]["openAPIV3Schema"]


def test_names_match_the_contract():
    assert CRD["metadata"]["name"] == f"{crd.PLURAL}.{crd.GROUP}"
    assert CRD["spec"]["group"] == crd.GROUP
    assert CRD["spec"]["names"]["kind"] == crd.KIND
    assert CRD["spec"]["names"]["shortNames"] == ["sbx"]
    assert CRD["spec"]["scope"] == "Namespaced"
    assert VERSION["name"] == crd.VERSION and VERSION["subresources"] == {"status": {}}


def test_printer_columns():
    columns = [column["name"] for column in VERSION["additionalPrinterColumns"]]
    assert columns[:4] == ["Language", "Phase", "Exit", "Duration-ms"] and columns[-1] == "Age"


def test_phases_are_the_api_status_vocabulary():
    phases = SCHEMA["properties"]["status"]["properties"]["phase"]["enum"]
    assert phases == [str(phase) for phase in Phase]
    assert set(crd.CONDITION_REASONS) == TERMINAL_PHASES


def test_the_status_schema_has_every_result_field():
    properties = SCHEMA["properties"]["status"]["properties"]
    assert {STATUS_NAMES[name] for name in (*FIELDS, "limits")} <= set(properties)
    assert set(properties["limits"]["properties"]) == {camel_case(item.name) for item in dataclasses.fields(EffectiveLimits)}
    assert set(properties["tests"]["items"]["properties"]) == {camel_case(item.name) for item in dataclasses.fields(TestResult)}
    assert set(properties["testSummary"]["properties"]) == {camel_case(item.name) for item in dataclasses.fields(TestSummary)}
    assert set(properties["compile"]["properties"]) == {camel_case(item.name) for item in dataclasses.fields(CompileResult)}
    spec = SCHEMA["properties"]["spec"]["properties"]
    assert {camel_case(name) for name in LIMIT_NAMES} | {"tests", "comparison"} <= set(spec)
    assert set(spec["tests"]["items"]["properties"]) == {"name", "input", "expectedOutput"}


def test_spec_is_validated_and_immutable():
    spec = SCHEMA["properties"]["spec"]
    assert spec["required"] == ["language"]
    rules = [validation["rule"] for validation in spec["x-kubernetes-validations"]]
    assert rules[:2] == ["self == oldSelf", "has(self.code) != has(self.inputsConfigMap)"]
    assert all(f"has(self.{field})" in rules[2] for field in crd.INPUT_FIELDS if field != "code")
    assert spec["properties"]["ttlSecondsAfterFinished"]["default"] == 3600
    name = spec["properties"]["files"]["items"]["properties"]["name"]
    assert len(name["x-kubernetes-validations"]) == 3
    assert spec["properties"]["files"]["x-kubernetes-list-map-keys"] == ["name"]


def test_status_keeps_kopf_bookkeeping():
    assert SCHEMA["properties"]["status"]["properties"]["kopf"]["x-kubernetes-preserve-unknown-fields"] is True


def test_operator_config_from_env():
    config = OperatorConfig.from_env({
        "SANDBOX_NAMESPACES": "a, b", "SANDBOX_SETUP_DEADLINE_SECONDS": "30",
        "SANDBOX_RUNTIME_CLASS": "gvisor", "SANDBOX_NODE_SELECTOR": '{"pool": "sandbox"}',
        "SANDBOX_MAX_TIMEOUT_SECONDS": "120",
    })
    assert config.namespaces == ("a", "b")
    assert config.setup_deadline_seconds == 30
    assert config.runtime_class_name == "gvisor"
    assert config.node_selector == {"pool": "sandbox"}
    assert config.limits.max_timeout_seconds == 120
    assert OperatorConfig.from_env({"SANDBOX_NAMESPACES": "*"}).namespaces == ()


def test_operator_config_errors_name_the_variable():
    for env in ({"SANDBOX_SETUP_DEADLINE_SECONDS": "soon"}, {"SANDBOX_TOLERATIONS": "{}"}):
        try:
            OperatorConfig.from_env(env)
        except SettingError as error:
            assert next(iter(env)) in str(error)
        else:
            raise AssertionError(f"{env} was accepted")


def _execution_with_inputs(inputs: dict, uid: str = "uid-1") -> tuple[dict, dict]:
    spec, taken = crd.split_inputs({"language": "python", **inputs, "timeoutSeconds": 5}, "exec-1")
    execution = {"metadata": {"name": "exec-1", "uid": uid}, "spec": spec}
    return execution, crd.inputs_configmap(execution, crd.compress(taken))


def test_inputs_come_back_from_their_configmap_only_for_its_owner():
    execution, configmap = _execution_with_inputs({"code": "print(1)", "stdin": "<&>" * 1000})
    assert crd.merge_inputs(execution, configmap) == {"language": "python", "code": "print(1)", "stdin": "<&>" * 1000,
                                                      "timeoutSeconds": 5}
    # A spec naming a ConfigMap someone else made (say, holding their secrets) is refused.
    stranger = {**execution, "metadata": {"name": "exec-1", "uid": "uid-2"}}
    with pytest.raises(crd.InputsError, match="not owned by this SandboxExecution"):
        crd.merge_inputs(stranger, configmap)
    with pytest.raises(crd.InputsError, match="no binaryData key 'inputs.json.gz'"):
        crd.merge_inputs(execution, {**configmap, "binaryData": {}})


def test_inputs_refuse_bombs_and_strangers_fields():
    execution, configmap = _execution_with_inputs({"code": ""})
    bomb = base64.b64encode(gzip.compress(b"[" + b" " * (3 * crd.MAX_INPUT_BYTES) + b"]")).decode()
    assert len(bomb) < 20_000
    for data, message in ((bomb, "more than"), (base64.b64encode(b"not gzip").decode(), "not gzip"),
                          (base64.b64encode(gzip.compress(b"[1]")).decode(), "must be an object"),
                          (base64.b64encode(gzip.compress(b'{"image": "x"}')).decode(), "must be an object"),
                          (base64.b64encode(gzip.compress(b"{")[:-4]).decode(), "cut short|not UTF-8 JSON")):
        with pytest.raises(crd.InputsError, match=message):
            crd.merge_inputs(execution, {**configmap, "binaryData": {crd.INPUTS_KEY: data}})
