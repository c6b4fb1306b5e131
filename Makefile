# The project's front door. `make run` serves the API locally; `make test` runs every test tier.
SHELL := /bin/bash
VENV ?= .venv
# The manifest scanner (checkov) has a venv of its own: it pins packaging<24, pytest 9 needs >=24,
# and its dependencies conflict with the project's.
SCAN_VENV ?= .venv-scan
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run test test-unit test-integration test-e2e cluster-up cluster-down cluster-status images deploy bench bench-cluster

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml hack/install-deps.sh contract/sandbox_contract/languages.yaml
	@hack/install-deps.sh
	@test -x $(PY) || python3 -m venv $(VENV)
	@echo "==> installing Python packages into $(VENV)"
	@$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	@touch $@

$(SCAN_VENV)/.installed: hack/scan-requirements.txt
	@test -x $(SCAN_VENV)/bin/python || python3 -m venv $(SCAN_VENV)
	@echo "==> installing the manifest scanner (checkov) into $(SCAN_VENV)"
	@$(SCAN_VENV)/bin/python -m pip install -q --disable-pip-version-check -r hack/scan-requirements.txt
	@touch $@

run: install  ## serve the API on $(HOST):$(PORT) with the local backend (prints the API key)
	$(VENV)/bin/sandbox-api --host $(HOST) --port $(PORT)

test: install $(SCAN_VENV)/.installed  ## every tier: unit, integration (local sandbox), e2e (real cluster, brought up if needed)
	hack/build.sh helm  # the chart's unit tests render with it (cached after the first build)
	$(PY) -m pytest -ra --durations=30 tests/unit tests/integration tests/e2e

test-unit: install
	$(PY) -m pytest -ra tests/unit

test-integration: install
	$(PY) -m pytest -ra tests/integration

test-e2e: install
	$(PY) -m pytest -ra tests/e2e

cluster-up:  ## build (cached) and start the single-node cluster; writes the kubeconfig
	hack/cluster.sh up

cluster-down:
	hack/cluster.sh down

cluster-status:
	hack/cluster.sh status

images:  ## rebuild the runtime images and import them into the cluster's containerd
	hack/images.sh build

# `make deploy`: the chart into the local cluster (images built and imported first), then `helm test`.
SANDBOX_CLUSTER_DIR ?= /var/lib/sandbox-cluster
RELEASE ?= code-sandbox
RELEASE_NAMESPACE ?= sandbox-system
CLUSTER_KUBECTL = KUBECONFIG=$(SANDBOX_CLUSTER_DIR)/kubeconfig $(SANDBOX_CLUSTER_DIR)/bin/kubectl
CLUSTER_HELM = KUBECONFIG=$(SANDBOX_CLUSTER_DIR)/kubeconfig $(SANDBOX_CLUSTER_DIR)/bin/helm

deploy:  ## build and import the API and operator images, helm upgrade --install, wait, helm test
	hack/component-images.sh build
	$(CLUSTER_KUBECTL) create namespace $(RELEASE_NAMESPACE) --dry-run=client -o yaml | $(CLUSTER_KUBECTL) apply -f -
	$(CLUSTER_KUBECTL) label namespace $(RELEASE_NAMESPACE) --overwrite pod-security.kubernetes.io/enforce=restricted
	$(CLUSTER_HELM) upgrade --install $(RELEASE) charts/code-sandbox --namespace $(RELEASE_NAMESPACE) --wait --timeout 5m
	$(CLUSTER_HELM) test $(RELEASE) --namespace $(RELEASE_NAMESPACE) --timeout 5m

bench: install  ## local backend: latency vs a bare interpreter, throughput
	$(PY) bench/run.py

bench-cluster: install  ## real cluster: API -> SandboxExecution -> result vs a bare Job
	$(PY) bench/cluster_bench.py
