#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test suite (unit,
# integration; GPU tests skip themselves when no GPU is present).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

install_debian_packages
build_kvtier
log "running the test suites"
cd "$KVTIER_BUILD_DIR"
ctest --output-on-failure --timeout 600 -j "$(nproc)"
