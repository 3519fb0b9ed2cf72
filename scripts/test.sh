#!/usr/bin/env bash
# Run the whole test suite (the README's test command). Installs libhdf5-dev first if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# pynwb + nwbinspector for tests/nwb.rs (an explicit LOWRANK_SMC_PYTHON wins; set and empty,
# it means none: the pynwb parts are skipped and no venv is attempted).
if [ -z "${LOWRANK_SMC_PYTHON+set}" ]; then
    LOWRANK_SMC_PYTHON="$(scripts/pynwb-venv.sh)"
    export LOWRANK_SMC_PYTHON
fi
exec cargo test --locked "$@"
