#!/usr/bin/env bash
# Builds the cluster's binaries from pinned sources into the cache, once per version:
#   kubernetes (apiserver, controller-manager, scheduler, kubelet, kube-proxy, kubectl), etcd, helm,
#   kube-router (Go module proxy, go.mod files under hack/build/), and the pause program
#   (Kubernetes' own pause.c, compiled static). A finished build lives in $SANDBOX_CACHE/bin/NAME-VERSION/;
#   an interrupted one only ever leaves a .tmp directory, which the next run rebuilds.
# Usage: hack/build.sh [all|kubernetes|etcd|helm|kube-router|pause]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Go >= the newest go directive below; an older local Go fetches that toolchain through the module proxy.
ensure_go() {
  command -v go >/dev/null || PATH=$PATH:/usr/local/go/bin
  command -v go >/dev/null || ensure_debian_packages golang-go
  command -v go >/dev/null || die "no Go toolchain found; install Go 1.24 or newer"
}

# go_build OUT_DIR MODULE LDFLAGS TARGET...: TARGET is "package" (binary named by go) or "name=package".
go_build() {
  local out=$1 module=$2 ldflags=$3 target
  shift 3
  if [ -d "$out" ]; then
    log "    cached: $out"
    return 0
  fi
  ensure_go
  rm -rf "$out.tmp"
  mkdir -p "$out.tmp"
  log "    building into $out (cold builds take minutes; log: $out.tmp/build.log)"
  for target in "$@"; do
    local dest="$out.tmp/" package=$target
    if [[ $target == *=* ]]; then dest="$out.tmp/${target%%=*}"; package=${target#*=}; fi
    (cd "$HACK_DIR/build/$module" &&
      CGO_ENABLED=0 nice go build -trimpath -ldflags "-s -w $ldflags" -o "$dest" "$package") \
      >>"$out.tmp/build.log" 2>&1 || { tail -n 30 "$out.tmp/build.log" >&2; die "go build of $package failed"; }
  done
  rm -f "$out.tmp/build.log"
  mv "$out.tmp" "$out"
}

kubernetes_ldflags() {
  local package flags=""
  for package in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $package.gitVersion=$KUBERNETES_VERSION -X $package.gitMajor=1"
    flags+=" -X $package.gitMinor=$(cut -d. -f2 <<<"$KUBERNETES_VERSION")"
    flags+=" -X $package.gitTreeState=clean -X $package.buildDate=2026-01-01T00:00:00Z"
  done
  printf '%s' "$flags"
}

build_kubernetes() {
  # All six in one `go build` so shared packages compile once.
  if [ ! -d "$KUBERNETES_BIN" ]; then
    ensure_go
    rm -rf "$KUBERNETES_BIN.tmp"
    mkdir -p "$KUBERNETES_BIN.tmp"
    log "    building Kubernetes $KUBERNETES_VERSION (cold: 20-40 min on 2 cores; log: $KUBERNETES_BIN.tmp/build.log)"
    (cd "$HACK_DIR/build/kubernetes" && CGO_ENABLED=0 nice go build -trimpath \
      -ldflags "-s -w $(kubernetes_ldflags)" -o "$KUBERNETES_BIN.tmp/" \
      k8s.io/kubernetes/cmd/{kube-apiserver,kube-controller-manager,kube-scheduler,kubelet,kube-proxy,kubectl}) \
      >"$KUBERNETES_BIN.tmp/build.log" 2>&1 || { tail -n 30 "$KUBERNETES_BIN.tmp/build.log" >&2; die "Kubernetes build failed"; }
    rm -f "$KUBERNETES_BIN.tmp/build.log"
    mv "$KUBERNETES_BIN.tmp" "$KUBERNETES_BIN"
  else
    log "    cached: $KUBERNETES_BIN"
  fi
}

build_etcd() {
  go_build "$ETCD_BIN" etcd "" \
    "etcd=go.etcd.io/etcd/server/v3"
}

build_helm() {
  go_build "$HELM_BIN" helm "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
    "helm=helm.sh/helm/v3/cmd/helm"
}

# Only its NetworkPolicy firewall runs: kube-network-policies needs nftables' queue expression, which
# this kernel lacks (CONFIG_NFT_QUEUE unset); kube-router uses iptables and ipset.
build_kube_router() {
  go_build "$KUBE_ROUTER_BIN" kube-router "-X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=$KUBE_ROUTER_VERSION" \
    "kube-router=github.com/cloudnativelabs/kube-router/v2/cmd/kube-router"
}

build_pause() {
  if [ -d "$PAUSE_BIN" ]; then
    log "    cached: $PAUSE_BIN"
    return 0
  fi
  ensure_debian_packages gcc libc6-dev
  local source="$GOMODCACHE/k8s.io/kubernetes@$KUBERNETES_VERSION/build/pause/linux/pause.c"
  [ -f "$source" ] || (cd "$HACK_DIR/build/kubernetes" && ensure_go && go mod download k8s.io/kubernetes)
  rm -rf "$PAUSE_BIN.tmp"
  mkdir -p "$PAUSE_BIN.tmp"
  gcc -Os -Wall -Werror -static -DVERSION="v$PAUSE_VERSION" -o "$PAUSE_BIN.tmp/pause" "$source"
  strip "$PAUSE_BIN.tmp/pause"
  mv "$PAUSE_BIN.tmp" "$PAUSE_BIN"
}

main() {
  local what=${1:-all}
  case $what in
    all)
      phase "build Kubernetes $KUBERNETES_VERSION" build_kubernetes
      phase "build etcd $ETCD_VERSION" build_etcd
      phase "build helm $HELM_VERSION" build_helm
      phase "build kube-router $KUBE_ROUTER_VERSION" build_kube_router
      phase "build pause $PAUSE_VERSION" build_pause ;;
    kubernetes|etcd|helm|pause) phase "build $what" "build_$what" ;;
    kube-router) phase "build $what" build_kube_router ;;
    *) die "usage: hack/build.sh [all|kubernetes|etcd|helm|kube-router|pause]" ;;
  esac
}

main "$@"
