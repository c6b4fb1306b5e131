#!/bin/sh
# The one recipe for putting the project into the API and operator images; both the local build
# (hack/component-images.sh) and the Containerfiles call it, so they install the same thing.
#   containers/install.sh wheels SOURCE_DIR WHEEL_DIR   build the project's wheel and fetch its pinned
#                                                       dependencies (needs the package index)
#   containers/install.sh install WHEEL_DIR             inside the image: a venv at /opt/sandbox from
#                                                       those wheels only (no network), then drop them
set -eu
VENV=/opt/sandbox

case ${1:-} in
  wheels)
    # From a clean copy of only what the distribution is built from: setuptools' build/ directory in
    # a working tree can carry modules deleted since. A fixed timestamp makes the wheel byte-identical
    # for identical sources, so the local image cache (keyed by a hash of its inputs) is reused.
    # pip comes from a throwaway venv: Debian's python3 has no pip module of its own.
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    mkdir "$work/source"
    for part in pyproject.toml README.md api contract kube operator runner; do
      [ ! -e "$2/$part" ] || cp -r "$2/$part" "$work/source/"
    done
    find "$work/source" -name __pycache__ -prune -exec rm -rf {} +
    python3 -m venv "$work/venv"
    SOURCE_DATE_EPOCH=315532800 "$work/venv/bin/pip" wheel --quiet --wheel-dir "$3" "$work/source"
    ;;
  install)
    python3 -m venv "$VENV"
    # --isolated: only these wheels, whatever pip configuration the build environment carries.
    "$VENV/bin/pip" --isolated install --quiet --no-index --no-cache-dir --find-links "$2" code-sandbox
    # Installers are not needed at run time; leaving them out shrinks what an attacker could use.
    "$VENV/bin/pip" --isolated uninstall --quiet --yes setuptools pip
    rm -rf "$2"
    ;;
  *)
    echo "usage: $0 wheels SOURCE_DIR WHEEL_DIR | install WHEEL_DIR" >&2
    exit 2
    ;;
esac
