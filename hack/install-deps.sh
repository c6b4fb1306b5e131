#!/usr/bin/env bash
# Installs the Debian packages the local backend and the tests need. Idempotent; quiet when all present.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ensure_debian_packages bubblewrap libseccomp2 python3 python3-venv nodejs bash coreutils util-linux
