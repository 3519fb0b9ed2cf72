#!/usr/bin/env bash
# Run the pipeline (the README's main command). Installs libhdf5-dev first if missing.
# Extra arguments go to `lowrank-smc run`, e.g. `scripts/run.sh --profile quick`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec cargo run --locked --release -- run pipeline.yaml "$@"
