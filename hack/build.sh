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

# build_once OUT BUILDER ARG...: unless OUT exists, runs BUILDER OUT.tmp ARG..., then renames OUT.tmp
# to OUT: a directory named OUT is always a finished build.
build_once() {
  local out=$1 builder=$2
  shift 2
  if [ -d "$out" ]; then
    log "    cached: $out"
    return 0
  fi
  rm -rf "$out.tmp"
  mkdir -p "$out.tmp"
  "$builder" "$out.tmp" "$@"
  mv "$out.tmp" "$out"
}

# go_build DIR MODULE COLD_TIME LDFLAGS PACKAGE...|NAME=PACKAGE: one `go build` in hack/build/MODULE into
# DIR. Several packages build together, so what they share compiles once; go names their binaries.
go_build() {
  local dir=$1 module=$2 cold_time=$3 ldflags=$4 output=$1/
  shift 4
  if [[ $# -eq 1 && $1 == *=* ]]; then output=$dir/${1%%=*}; set -- "${1#*=}"; fi
  ensure_go
  log "    building into ${dir%.tmp} (cold builds take $cold_time; log: $dir/build.log)"
  (cd "$HACK_DIR/build/$module" &&
    CGO_ENABLED=0 nice go build -trimpath -ldflags "-s -w $ldflags" -o "$output" "$@") \
    >"$dir/build.log" 2>&1 || { tail -n 30 "$dir/build.log" >&2; die "go build of $* failed"; }
  rm -f "$dir/build.log"
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
  build_once "$KUBERNETES_BIN" go_build kubernetes "20-40 min on 2 cores" "$(kubernetes_ldflags)" \
    k8s.io/kubernetes/cmd/{kube-apiserver,kube-controller-manager,kube-scheduler,kubelet,kube-proxy,kubectl}
}

build_etcd() {
  build_once "$ETCD_BIN" go_build etcd minutes "" \
    "etcd=go.etcd.io/etcd/server/v3"
}

build_helm() {
  build_once "$HELM_BIN" go_build helm minutes "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
    "helm=helm.sh/helm/v3/cmd/helm"
}

# Only its NetworkPolicy firewall runs: kube-network-policies needs nftables' queue expression, which
# this kernel lacks (CONFIG_NFT_QUEUE unset); kube-router uses iptables and ipset.
build_kube_router() {
  build_once "$KUBE_ROUTER_BIN" go_build kube-router minutes "-X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=$KUBE_ROUTER_VERSION" \
    "kube-router=github.com/cloudnativelabs/kube-router/v2/cmd/kube-router"
}

build_pause() { build_once "$PAUSE_BIN" compile_pause; }

compile_pause() { # DIR
  ensure_debian_packages gcc libc6-dev
  local source="$GOMODCACHE/k8s.io/kubernetes@$KUBERNETES_VERSION/build/pause/linux/pause.c"
  [ -f "$source" ] || (cd "$HACK_DIR/build/kubernetes" && ensure_go && go mod download k8s.io/kubernetes)
  gcc -Os -Wall -Werror -static -DVERSION="v$PAUSE_VERSION" -o "$1/pause" "$source"
  strip "$1/pause"
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
