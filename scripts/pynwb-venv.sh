#!/usr/bin/env bash
# Prints the path of a Python that has pynwb + nwbinspector, creating a venv for it under
# ~/.cache on first use (tests/nwb.rs checks our NWB files against them when
# LOWRANK_SMC_PYTHON points there). Prints nothing, and exits 0, when that is not possible
# (no python3-venv, no package index): those test parts then say they were skipped.
set -uo pipefail
venv="${LOWRANK_SMC_PYVENV:-$HOME/.cache/lowrank-smc-pyvenv}"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import pynwb, nwbinspector' 2>/dev/null; then
    command -v python3 >/dev/null 2>&1 || exit 0
    python3 -m venv "$venv" >/dev/null 2>&1 || exit 0
    timeout 600 "$venv/bin/pip" install --quiet pynwb nwbinspector >/dev/null 2>&1 || exit 0
fi
if "$venv/bin/python" -c 'import pynwb, nwbinspector' 2>/dev/null; then
    echo "$venv/bin/python"
fi
exit 0
