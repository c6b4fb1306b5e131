"""The Helm chart, rendered with the real `helm template`: hardened pods, least-privilege RBAC,
network policies, values validation, and the catalogue and CRD it shares with the rest of the repo.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.unit.test_operator_pod_security import restricted_violations

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "code-sandbox"
NAMESPACE = "sandbox-system"


def helm_binary() -> str | None:
    """The helm that hack/build.sh builds, else one on PATH."""
    cache = os.environ.get("SANDBOX_CACHE", "/var/cache/sandbox-dev")
    built = sorted(glob.glob(f"{cache}/bin/helm-*/helm"))
    return built[-1] if built else shutil.which("helm")


HELM = helm_binary()
pytestmark = pytest.mark.skipif(HELM is None, reason="no helm binary: run `hack/build.sh helm`")


def helm_template(*args: str, release: str = "code-sandbox") -> subprocess.CompletedProcess:
    return subprocess.run(
        [HELM, "template", release, str(CHART), "--namespace", NAMESPACE, *args],
        capture_output=True, text=True, check=False,
    )


def render(*args: str, release: str = "code-sandbox") -> list[dict]:
    """The chart's documents for the given extra `helm template` arguments."""
    done = helm_template(*args, release=release)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def find(docs: list[dict], kind: str, name_part: str = "") -> list[dict]:
    return [d for d in docs if d["kind"] == kind and name_part in d["metadata"]["name"]]


def pod_specs(docs: list[dict]) -> dict[str, dict]:
    specs = {d["metadata"]["name"]: d["spec"]["template"]["spec"] for d in find(docs, "Deployment")}
    specs.update({d["metadata"]["name"]: d["spec"]["template"]["spec"] for d in find(docs, "Job")})
    specs.update({d["metadata"]["name"]: d["spec"] for d in find(docs, "Pod")})
    return specs


@pytest.fixture(scope="module")
def default_docs() -> list[dict]:
    return render()


def test_every_pod_passes_restricted_and_is_hardened(default_docs):
    specs = pod_specs(default_docs)
    assert set(specs) == {"code-sandbox-api", "code-sandbox-operator", "code-sandbox-cleanup", "code-sandbox-test-execution"}
    for name, spec in specs.items():
        assert restricted_violations(spec) == [], name
        assert spec["automountServiceAccountToken"] is False, name
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            assert {"cpu", "memory"} <= set(container["resources"]["limits"]), name
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name
            image = container["image"]
            assert image.rsplit(":", 1)[-1] == "0.1.0", f"{name}: {image} must carry the app version"
            assert container["imagePullPolicy"] == "IfNotPresent", name
        assert not any("hostPath" in volume for volume in spec.get("volumes", [])), name


def test_only_pods_calling_the_kubernetes_api_get_a_service_account_token(default_docs):
    for name, spec in pod_specs(default_docs).items():
        projected = [v for v in spec.get("volumes", []) if "projected" in v]
        tokens = [s for v in projected for s in v["projected"]["sources"] if "serviceAccountToken" in s]
        if name.endswith("-test-execution"):
            assert tokens == []
        else:
            assert len(tokens) == 1, name
            assert spec["enableServiceLinks"] is False
            mounts = [m for c in spec["containers"] for m in c.get("volumeMounts", []) if m["name"] == "kube-api-access"]
            assert mounts and all(m["readOnly"] for m in mounts), name
    for account in find(default_docs, "ServiceAccount"):
        assert account["automountServiceAccountToken"] is False


def test_probes_resources_and_disruption_budgets(default_docs):
    for deployment in find(default_docs, "Deployment"):
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert "livenessProbe" in container and "readinessProbe" in container
        assert deployment["spec"]["replicas"] == 2
    budgets = {d["metadata"]["name"]: d["spec"] for d in find(default_docs, "PodDisruptionBudget")}
    assert set(budgets) == {"code-sandbox-api", "code-sandbox-operator"}
    assert all(budget["maxUnavailable"] == 1 for budget in budgets.values())


def rules_of(docs: list[dict], kind: str, name: str) -> list[dict]:
    (role,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return role["rules"]


def test_api_may_touch_only_sandbox_executions_their_inputs_and_its_limit_leases(default_docs):
    rules = rules_of(default_docs, "Role", "code-sandbox-api")
    assert {(g, r) for rule in rules for g in rule["apiGroups"] for r in rule["resources"]} == {
        ("sandbox.dev", "sandboxexecutions"), ("coordination.k8s.io", "leases"), ("", "configmaps"),
    }
    # ConfigMaps: only made (large inputs), never read, so no key's inputs are readable through the API.
    assert [rule["verbs"] for rule in rules if rule["resources"] == ["configmaps"]] == [["create"]]
    (role,) = [d for d in default_docs if d["kind"] == "Role" and d["metadata"]["name"] == "code-sandbox-api"]
    assert role["metadata"]["namespace"] == "sandbox"
    bound = {s["name"] for d in find(default_docs, "ClusterRoleBinding") for s in d["subjects"]}
    assert "code-sandbox-api" not in bound


def test_no_wildcards_and_no_secrets_in_any_rule(default_docs):
    for role in find(default_docs, "Role") + find(default_docs, "ClusterRole"):
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], role["metadata"]["name"]
            assert "secrets" not in rule["resources"]


def test_operator_cluster_role_is_read_only_discovery(default_docs):
    rules = rules_of(default_docs, "ClusterRole", "code-sandbox-operator-discovery")
    assert {r for rule in rules for r in rule["resources"]} == {"customresourcedefinitions", "namespaces"}
    assert {v for rule in rules for v in rule["verbs"]} == {"list", "watch"}


def env_of(docs: list[dict], deployment: str) -> dict[str, str]:
    (found,) = find(docs, "Deployment", deployment)
    return {e["name"]: e["value"] for e in found["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_the_chart_sets_every_shared_limit_to_the_contracts_default(default_docs):
    from sandbox_contract.request import ExecutionLimits
    from sandbox_contract.settings import settings_of

    declared = {setting.env: str(setting.default) for setting in settings_of(ExecutionLimits)}
    for component in ("api", "operator"):
        env = env_of(default_docs, component)
        assert {name: env.get(name) for name in declared} == declared, component


def test_operator_peering_is_on_and_has_its_peering_object(default_docs):
    env = env_of(default_docs, "operator")
    (peering,) = find(default_docs, "KopfPeering")
    assert env["SANDBOX_PEERING"] == peering["metadata"]["name"]
    assert env["SANDBOX_NAMESPACES"] == peering["metadata"]["namespace"] == "sandbox"


def test_sandbox_namespace_enforces_restricted_and_denies_all_traffic(default_docs):
    (namespace,) = find(default_docs, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    (deny,) = find(default_docs, "NetworkPolicy", "sandbox-deny-all")
    assert deny["metadata"]["namespace"] == "sandbox"
    assert deny["spec"] == {"podSelector": {"matchLabels": {"sandbox.dev/sandbox": "true"}},
                            "policyTypes": ["Ingress", "Egress"]}


def test_api_egress_reaches_only_the_kubernetes_api():
    docs = render("--set-json", 'kubernetesApi.cidrs=["10.89.0.2/32"]')
    (policy,) = [d for d in find(docs, "NetworkPolicy") if d["metadata"]["name"] == "code-sandbox-api"]
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    (egress,) = policy["spec"]["egress"]
    assert egress["to"] == [{"ipBlock": {"cidr": "10.89.0.2/32"}}]
    assert {p["port"] for p in egress["ports"]} == {443, 6443}
    (ingress,) = policy["spec"]["ingress"]
    assert ingress["ports"] == [{"protocol": "TCP", "port": 8000}]


SHIPPED_CATALOGUE = REPO / "contract" / "sandbox_contract" / "languages.yaml"


@pytest.fixture(scope="module")
def shipped_docs() -> list[dict]:
    """The chart given the shipped catalogue as a values file, as one adds a language to it."""
    return render("-f", str(SHIPPED_CATALOGUE))


def languages_configmaps(docs: list[dict]) -> list[dict]:
    return [yaml.safe_load(c["data"]["languages.yaml"]) for c in find(docs, "ConfigMap", "languages")]


def test_language_catalogue_is_the_one_the_images_ship_by_default(default_docs):
    """No second copy: by default the pods read the catalogue shipped in sandbox_contract."""
    assert languages_configmaps(default_docs) == []
    for component in ("api", "operator"):
        assert "SANDBOX_LANGUAGES_FILE" not in env_of(default_docs, component)
        (deployment,) = find(default_docs, "Deployment", component)
        assert "languages" not in {v["name"] for v in deployment["spec"]["template"]["spec"]["volumes"]}


def test_the_shipped_catalogue_is_a_values_file_rendered_unchanged(shipped_docs):
    """`-f contract/sandbox_contract/languages.yaml` passes the schema and reaches the pods as it is."""
    assert languages_configmaps(shipped_docs) == [yaml.safe_load(SHIPPED_CATALOGUE.read_text())]
    assert env_of(shipped_docs, "api")["SANDBOX_LANGUAGES_FILE"] == "/etc/sandbox/languages/languages.yaml"
    assert env_of(shipped_docs, "operator")["SANDBOX_LANGUAGES_FILE"] == "/etc/sandbox/languages/languages.yaml"


def test_the_schema_knows_every_catalogue_field():
    from sandbox_contract.catalogue import ENTRY_FIELDS

    schema = json.loads((CHART / "values.schema.json").read_text())
    assert set(schema["properties"]["languages"]["additionalProperties"]["properties"]) == ENTRY_FIELDS


def test_a_language_added_in_values_reaches_the_catalogue_and_rolls_the_pods(shipped_docs):
    tcl = '{"version": "8.6", "image": "localhost/sandbox/tcl:8.6", "run": ["tclsh", "{main}"], "main_file": "main.tcl"}'
    docs = render("-f", str(SHIPPED_CATALOGUE), "--set-json", f"languages.tcl={tcl}")
    (catalogue,) = languages_configmaps(docs)
    assert set(catalogue["languages"]) == set(yaml.safe_load(SHIPPED_CATALOGUE.read_text())["languages"]) | {"tcl"}
    for component in ("api", "operator"):
        (before,) = find(shipped_docs, "Deployment", component)
        (after,) = find(docs, "Deployment", component)
        key = "checksum/languages"
        assert before["spec"]["template"]["metadata"]["annotations"][key] != after["spec"]["template"]["metadata"]["annotations"][key]


def test_generated_key_secret_holds_a_keys_file_matching_the_client_key(default_docs):
    import base64
    import hashlib

    (secret,) = find(default_docs, "Secret")
    keys = base64.b64decode(secret["data"]["keys"]).decode()
    client_key = base64.b64decode(secret["data"]["client-key"]).decode()
    assert keys == f"default:{hashlib.sha256(client_key.encode()).hexdigest()}"
    (api,) = find(default_docs, "Deployment", "api")
    (volume,) = [v for v in api["spec"]["template"]["spec"]["volumes"] if v["name"] == "keys"]
    assert volume["secret"]["items"] == [{"key": "keys", "path": "keys"}], "only the digests reach the API"


def test_existing_secret_replaces_the_generated_one():
    docs = render("--set", "api.keys.existingSecret=my-keys")
    assert find(docs, "Secret") == [] and find(docs, "Pod") == []  # the helm test needs the generated key
    (api,) = find(docs, "Deployment", "api")
    (volume,) = [v for v in api["spec"]["template"]["spec"]["volumes"] if v["name"] == "keys"]
    assert volume["secret"]["secretName"] == "my-keys"


def test_sandbox_pod_placement_values_reach_the_operator():
    docs = render("--set", "sandboxPods.runtimeClassName=gvisor", "--set-json",
                  'sandboxPods.nodeSelector={"sandbox": "yes"}', "--set-json",
                  'sandboxPods.tolerations=[{"key": "sandbox", "operator": "Exists", "effect": "NoSchedule"}]')
    env = env_of(docs, "operator")
    assert env["SANDBOX_RUNTIME_CLASS"] == "gvisor"
    assert yaml.safe_load(env["SANDBOX_NODE_SELECTOR"]) == {"sandbox": "yes"}
    assert yaml.safe_load(env["SANDBOX_TOLERATIONS"]) == [{"key": "sandbox", "operator": "Exists", "effect": "NoSchedule"}]


@pytest.mark.parametrize("args, message", [
    (["--set", "api.replicas=0"], "/api/replicas"),
    (["--set", "images.api.tag=latest"], "/images/api/tag"),
    (["--set-json", 'languages.cobol={"version": "1"}'], "/languages/cobol"),
    (["--set-json", 'languages.cobol={"version": "1", "image": "c:1", "main_file": "m", "command": ["c"]}'],
     "additional properties 'command' not allowed"),
    (["--set", "sandboxNamespace.name=Not_A_Name"], "/sandboxNamespace/name"),
    (["--set", "api.keys.generateDefault=false"], "api.keys: give entries"),
    (["--set", "unknownValue=1"], "unknownValue"),
])
def test_bad_values_are_refused_with_the_value_named(args, message):
    done = helm_template(*args)
    assert done.returncode != 0
    assert message in done.stderr


def test_helm_lint_passes():
    done = subprocess.run([HELM, "lint", "--strict", str(CHART)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_uninstall_cleanup_runs_first_as_the_operator_under_its_network_policy(default_docs):
    (job,) = find(default_docs, "Job", "cleanup")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-delete"
    pod = job["spec"]["template"]
    assert pod["spec"]["serviceAccountName"] == "code-sandbox-operator"
    (policy,) = [d for d in find(default_docs, "NetworkPolicy") if d["metadata"]["name"] == "code-sandbox-operator"]
    (expression,) = policy["spec"]["podSelector"]["matchExpressions"]
    assert pod["metadata"]["labels"]["app.kubernetes.io/component"] in expression["values"]


def _container_env(docs: list[dict], deployment: str) -> dict[str, str]:
    (container,) = find(docs, "Deployment", deployment)[0]["spec"]["template"]["spec"]["containers"]
    return {item["name"]: item["value"] for item in container.get("env", []) if "value" in item}


def test_the_rendered_settings_are_accepted_by_the_api_and_the_operator(default_docs):
    """Helm prints large numbers as floats (6.7108864e+07) unless a template says int64: each component
    must parse what the chart gives it."""
    from sandbox_api.config import settings_from_env
    from sandbox_operator.config import OperatorConfig

    settings_from_env(_container_env(default_docs, "-api"))
    OperatorConfig.from_env(_container_env(default_docs, "-operator"))
