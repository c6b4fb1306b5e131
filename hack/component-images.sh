#!/usr/bin/env bash
# Builds the API and operator images with hack/images.sh (no Docker, no registry) and imports them
# into the local cluster. The Debian packages come from containers/<component>.packages and the
# project is installed by containers/install.sh: the same two files Containerfile.<component> uses.
#   hack/component-images.sh build     build both images (cached by content); import them if the cluster runs
#   hack/component-images.sh tag       print the image tag (the project's version)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REPO_DIR=$(cd "$HACK_DIR/.." && pwd)
COMPONENTS=(api operator)

project_version() {
  python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' \
    "$REPO_DIR/pyproject.toml"
}

# The package list without comments, space-separated, as images.sh --packages takes it.
packages_of() { grep -v '^[[:space:]]*#' "$REPO_DIR/containers/$1.packages" | xargs; }

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

build_components() {
  local version component import=()
  version=$(project_version)
  if [ -S "$CONTAINERD_SOCKET" ]; then import=(--import); fi
  # The wheels are built on this host (python3 3.11, like bookworm's) because the image build runs
  # chrooted without network; inside the image install.sh installs from them only.
  log "==> wheels of the project and its pinned dependencies"
  "$REPO_DIR/containers/install.sh" wheels "$REPO_DIR" "$WORK/wheels"
  for component in "${COMPONENTS[@]}"; do
    log "==> image localhost/sandbox/$component:$version"
    "$HACK_DIR/images.sh" image "localhost/sandbox/$component:$version" \
      --packages "$(packages_of "$component")" \
      --copy "$REPO_DIR/containers/install.sh:/tmp/install.sh" \
      --copy "$WORK/wheels:/tmp/wheels" \
      --run "/tmp/install.sh install /tmp/wheels && rm /tmp/install.sh" \
      --entrypoint "/opt/sandbox/bin/sandbox-$component" \
      --env PYTHONDONTWRITEBYTECODE=1 --env PYTHONUNBUFFERED=1 \
      "${import[@]}" >/dev/null
  done
}

case ${1:-} in
  build) build_components ;;
  tag) project_version ;;
  *) die "usage: hack/component-images.sh build | tag" ;;
esac
