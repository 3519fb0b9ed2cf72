#!/usr/bin/env bash
# Install the system libraries the build needs, when missing (Debian/Ubuntu).
#
# Only HDF5 is needed (NWB recordings and model files are HDF5): the `hdf5` crate links the
# system library found by pkg-config. We install Debian's package instead of building HDF5
# from source because that would need cmake and a C toolchain run of several minutes.
set -euo pipefail

if pkg-config --exists hdf5 2>/dev/null; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: libhdf5 (with pkg-config) is missing and apt-get is not available;" \
         "install HDF5 development files and pkg-config with your package manager" >&2
    exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
echo "installing libhdf5-dev and pkg-config (needed to read NWB/HDF5 files)…" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq libhdf5-dev pkg-config >/dev/null
