# Shared by the hack/ scripts (sourced, never run): where things live, the pinned versions, logging
# with per-phase timing, and idempotent Debian package installation.
# shellcheck shell=bash

HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SANDBOX_CACHE=${SANDBOX_CACHE:-/var/cache/sandbox-dev}
SANDBOX_CLUSTER_DIR=${SANDBOX_CLUSTER_DIR:-/var/lib/sandbox-cluster}
RUN_DIR=/run/sandbox-cluster # the running cluster's pid files and sockets; gone after `cluster.sh down`
CONTAINERD_SOCKET=$RUN_DIR/containerd.sock
export GOMODCACHE=$SANDBOX_CACHE/gomod GOCACHE=$SANDBOX_CACHE/gocache GOFLAGS=-modcacherw GOWORK=off

# One source of truth for each version: the go.mod that pins it.
pinned_version() { # MODULE_DIR MODULE_PATH
  awk -v m="$2" '$1 == "require" && $2 == m { print $3 } $1 == m && $2 ~ /^v/ { print $2 }' \
    "$HACK_DIR/build/$1/go.mod" | head -n1
}
KUBERNETES_VERSION=$(pinned_version kubernetes k8s.io/kubernetes)
ETCD_VERSION=$(pinned_version etcd go.etcd.io/etcd/server/v3)
HELM_VERSION=$(pinned_version helm helm.sh/helm/v3)
KUBE_ROUTER_VERSION=$(pinned_version kube-router github.com/cloudnativelabs/kube-router/v2)
PAUSE_VERSION=3.10.1 # the pause.c shipped with Kubernetes 1.34 (build/pause/Makefile TAG)
PAUSE_IMAGE=localhost/sandbox/pause:$PAUSE_VERSION

KUBERNETES_BIN=$SANDBOX_CACHE/bin/kubernetes-$KUBERNETES_VERSION
ETCD_BIN=$SANDBOX_CACHE/bin/etcd-$ETCD_VERSION
HELM_BIN=$SANDBOX_CACHE/bin/helm-$HELM_VERSION
KUBE_ROUTER_BIN=$SANDBOX_CACHE/bin/kube-router-$KUBE_ROUTER_VERSION
PAUSE_BIN=$SANDBOX_CACHE/bin/pause-$PAUSE_VERSION

log() { printf '%s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# phase NAME CMD...: runs one step, printing what it does and how long it took.
phase() {
  local name=$1 start=$SECONDS
  shift
  log "==> $name"
  "$@"
  log "    $name: done in $((SECONDS - start))s"
}

# Installs the Debian packages that are missing; silent when all are present.
ensure_debian_packages() {
  local package missing=()
  for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || die "need root to install ${missing[*]} (run this as root, or install them yourself)"
  log "    installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  local output
  output=$(apt-get update -qq 2>&1 && apt-get install -y -qq --no-install-recommends "${missing[@]}" 2>&1) ||
    { printf '%s\n' "$output" >&2; die "could not install ${missing[*]} with apt-get (output above)"; }
}

# The language catalogue (contract/sandbox_contract/languages.yaml, or $SANDBOX_LANGUAGES_FILE) asked
# through its own parser with Debian's python3:  catalogue images | host-packages
catalogue() {
  ensure_debian_packages python3 python3-yaml
  PYTHONPATH="$HACK_DIR/../contract:$HACK_DIR/../runner" /usr/bin/python3 -m sandbox_contract.catalogue "$@"
}

require_root() {
  [ "$(id -u)" -eq 0 ] || die "the local cluster runs as root (containerd, kubelet, iptables): run this as root"
}
