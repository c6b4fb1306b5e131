#!/usr/bin/env bash
# Builds container images without Docker or a registry, and imports them into the cluster's containerd.
# An image is Debian bookworm packages (mmdebstrap) or nothing (scratch), plus files, plus an OCI config;
# umoci assembles it and skopeo writes a docker-archive tarball, cached under
# $SANDBOX_CACHE/images/<name>-<hash of every input>.tar, so an unchanged image is never rebuilt.
#
#   hack/images.sh build                     the cluster's images: pause and the runtime images of
#                                            languages.yaml; imports them if the cluster runs
#   hack/images.sh image NAME:TAG [options]  one image; prints the tarball path. Options:
#       --packages "P1 P2"   Debian packages (omit for an image from scratch)
#       --copy SRC:DEST      copy a file or directory into the image (repeatable)
#       --run CMD            run a shell command chrooted in the image after the copies (repeatable)
#       --entrypoint PATH    entrypoint (repeatable: one argv element each)
#       --user UID:GID       default 65532:65532 (an /etc/passwd entry "sandbox" is added for Debian images)
#       --env KEY=VALUE      repeatable
#       --import             import into the running cluster's containerd afterwards
#   hack/images.sh tarballs                  build the cluster's images, print their tarball paths
#   hack/images.sh import TARBALL...         import tarballs into the cluster's containerd (k8s.io namespace)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

IMAGES_CACHE=$SANDBOX_CACHE/images
RUNTIME_USER=65532:65532
# The runtime images, one `NAME|PACKAGES` line per language of the catalogue (with python3 for the runner).
mapfile -t RUNTIME_IMAGES < <(catalogue images)
[ ${#RUNTIME_IMAGES[@]} -gt 0 ] || die "the language catalogue lists no image to build"

# The host's bookworm apt sources, so images come from the same (possibly snapshot) mirror as the host.
apt_sources() {
  local file
  for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$file" ] && grep -qE '^[^#]*\bbookworm\b' "$file" && grep -qiE '^[^#]*debian' "$file" && printf '%s\n' "$file"
  done
  return 0
}

# Hash of everything that determines the image: this script's code (not its comments), the arguments,
# copied content, apt sources.
input_hash() { # NAME PACKAGES COPIES RUNS ENTRYPOINT USER ENV
  {
    grep -v '^[[:space:]]*#' "${BASH_SOURCE[0]}"
    printf '%s\n' "$@"
    local copy src
    for copy in $3; do
      src=${copy%%:*}
      tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$(dirname "$src")" -cf - "$(basename "$src")"
    done
    if [ -n "$2" ]; then apt_sources | xargs -r cat; fi
  } | sha256sum | cut -c1-16
}

build_image() { # NAME PACKAGES COPIES RUNS ENTRYPOINT USER ENV -> prints tarball path
  local name=$1 packages=$2 copies=$3 runs=$4 entrypoint=$5 user=$6 env=$7
  local stem hash tarball work
  stem=$IMAGES_CACHE/$(tr '/:' '__' <<<"$name")
  hash=$(input_hash "$@")
  tarball=$stem-$hash.tar
  if [ -f "$tarball" ]; then
    log "    cached: $tarball"
    printf '%s\n' "$tarball"
    return 0
  fi
  require_root
  ensure_debian_packages umoci skopeo
  [ -z "$packages" ] || ensure_debian_packages mmdebstrap debian-archive-keyring
  mkdir -p "$IMAGES_CACHE"
  work=$(mktemp -d "$IMAGES_CACHE/.build-XXXXXX")
  trap 'rm -rf "$work"; trap - RETURN' RETURN
  umoci init --layout "$work/oci"
  umoci new --image "$work/oci:image"
  umoci unpack --image "$work/oci:image" "$work/bundle" >/dev/null
  if [ -n "$packages" ]; then
    log "    mmdebstrap bookworm: $packages"
    local sources=()
    mapfile -t sources < <(apt_sources)
    rmdir "$work/bundle/rootfs"
    # essential = the Essential:yes set (no apt in the image); docs and locales left out to stay small.
    # shellcheck disable=SC2086
    nice mmdebstrap --quiet --variant=essential --include="${packages// /,}" \
      --aptopt='APT::Install-Recommends "false"' \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
      --dpkgopt='path-exclude=/usr/share/info/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
      --customize-hook='echo "sandbox:x:65532:65532:sandbox:/tmp:/usr/sbin/nologin" >> "$1/etc/passwd"' \
      --customize-hook='echo "sandbox:x:65532:" >> "$1/etc/group"' \
      --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/* "$1"/var/log/*' \
      bookworm "$work/bundle/rootfs" "${sources[@]}" >&2
  fi
  local copy run
  for copy in $copies; do
    mkdir -p "$(dirname "$work/bundle/rootfs/${copy#*:}")"
    cp -a "${copy%%:*}" "$work/bundle/rootfs/${copy#*:}"
  done
  while IFS= read -r run; do
    [ -z "$run" ] || chroot "$work/bundle/rootfs" /bin/sh -c "$run" >&2
  done <<<"$runs"
  umoci repack --image "$work/oci:image" "$work/bundle" >&2
  local config=(--config.user="$user" --config.workingdir=/)
  local item
  for item in $entrypoint; do config+=(--config.entrypoint="$item"); done
  for item in $env; do config+=(--config.env="$item"); done
  umoci config --image "$work/oci:image" "${config[@]}" >&2
  skopeo copy --quiet "oci:$work/oci:image" "docker-archive:$work/image.tar:$name" >&2
  # Earlier builds of this image are superseded.
  find "$IMAGES_CACHE" -maxdepth 1 -name "${stem##*/}-*.tar" ! -path "$tarball" -delete
  mv "$work/image.tar" "$tarball"
  log "    built $name -> $tarball ($(du -h "$tarball" | cut -f1))"
  printf '%s\n' "$tarball"
}

# Imports each tarball once per cluster state (a marker per tarball in the state dir).
import_images() {
  local tarball marker
  [ -S "$CONTAINERD_SOCKET" ] || die "the cluster's containerd is not running ($CONTAINERD_SOCKET): run 'make cluster-up' first"
  mkdir -p "$SANDBOX_CLUSTER_DIR/images"
  for tarball in "$@"; do
    marker="$SANDBOX_CLUSTER_DIR/images/$(basename "$tarball").imported"
    [ -f "$marker" ] && continue
    ctr --address "$CONTAINERD_SOCKET" --namespace k8s.io images import "$tarball" >/dev/null
    touch "$marker"
    log "    imported $(basename "$tarball")"
  done
}

# The images every cluster needs; prints their tarball paths.
cluster_images() {
  "$HACK_DIR/build.sh" pause >&2
  build_image "$PAUSE_IMAGE" "" "$PAUSE_BIN/pause:/pause" "" /pause 65535:65535 ""
  local entry
  for entry in "${RUNTIME_IMAGES[@]}"; do
    build_image "${entry%%|*}" "${entry#*|}" "" "" "" "$RUNTIME_USER" ""
  done
}

image_command() { # NAME [options]
  local name=${1:?usage: hack/images.sh image NAME:TAG [options]} packages="" copies="" runs="" entrypoint=""
  local user=$RUNTIME_USER env="" import=false
  shift
  [[ $name == */*:* && $name != *:latest ]] ||
    die "image name '$name' must be fully qualified with a version tag, e.g. localhost/sandbox/api:0.1.0"
  while [ $# -gt 0 ]; do
    case $1 in
      --packages) packages=$2; shift 2 ;;
      --copy) [ -e "${2%%:*}" ] || die "--copy $2: no such file"; copies+="$(realpath "${2%%:*}"):${2#*:} "; shift 2 ;;
      --run) runs+="$2"$'\n'; shift 2 ;;
      --entrypoint) entrypoint+="$2 "; shift 2 ;;
      --user) user=$2; shift 2 ;;
      --env) env+="$2 "; shift 2 ;;
      --import) import=true; shift ;;
      *) die "unknown option '$1' (see the header of hack/images.sh)" ;;
    esac
  done
  local tarball
  tarball=$(build_image "$name" "$packages" "$copies" "$runs" "$entrypoint" "$user" "$env")
  [ "$import" = false ] || import_images "$tarball"
  printf '%s\n' "$tarball"
}

main() {
  case ${1:-} in
    build)
      local tarballs=()
      mapfile -t tarballs < <(cluster_images)
      [ ${#tarballs[@]} -eq $((1 + ${#RUNTIME_IMAGES[@]})) ] || die "image build failed"
      if [ -S "$CONTAINERD_SOCKET" ]; then import_images "${tarballs[@]}"; fi ;;
    tarballs) cluster_images ;;
    image) shift; image_command "$@" ;;
    import) shift; import_images "$@" ;;
    *) die "usage: hack/images.sh build | tarballs | image NAME:TAG [options] | import TARBALL... (see its header)" ;;
  esac
}

main "$@"
