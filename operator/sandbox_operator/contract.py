"""The SandboxExecution contract shared by the operator and the API's Kubernetes backend.

Names of the resource, its labels, phases and condition types live here once; the CRD itself is
charts/code-sandbox/crds/sandboxexecutions.yaml (the single source; manifests/ is rendered from the chart).
"""

from __future__ import annotations

import hashlib
import re

GROUP = "sandbox.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "SandboxExecution"
PLURAL = "sandboxexecutions"

# Phases use the API's status vocabulary, so `kubectl get sbx` and the HTTP API say the same words.
PHASE_PENDING = "pending"
PHASE_RUNNING = "running"
TERMINAL_PHASES = frozenset({"completed", "error_runtime", "timeout", "error_setup"})

# Condition types. `kubectl wait --for=condition=Finished` waits for any outcome;
# `--for=condition=Succeeded` only for exit code 0.
CONDITION_STARTED = "Started"
CONDITION_FINISHED = "Finished"
CONDITION_SUCCEEDED = "Succeeded"

# Condition reasons (CamelCase, as Kubernetes requires) for each terminal phase.
CONDITION_REASONS = {
    "completed": "Completed",
    "error_runtime": "RuntimeError",
    "timeout": "Timeout",
    "error_setup": "SetupError",
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
