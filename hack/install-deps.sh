#!/usr/bin/env bash
# Installs the Debian packages the local backend and the tests need, the languages of the catalogue
# among them. Idempotent; quiet when all present.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ensure_debian_packages bubblewrap libseccomp2 python3 python3-venv coreutils util-linux
# Every language of the catalogue, so the local backend offers them all.
read -ra languages <<<"$(catalogue host-packages)"
ensure_debian_packages "${languages[@]}"
