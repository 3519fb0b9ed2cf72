#!/usr/bin/env bash
# Run the whole test suite (the README's test command). Installs libhdf5-dev first if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec cargo test --locked "$@"
