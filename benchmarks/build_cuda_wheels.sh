#!/usr/bin/env bash
# Build pure-Python wheels of mamba-ssm and causal-conv1d into wheels/ (gitignored): their Triton
# kernels without the compiled CUDA extensions, to carry to a GPU machine that has no package index.
#
#   bash benchmarks/build_cuda_wheels.sh
#   MAMBA_SSM_VERSION=2.2.6.post3 bash benchmarks/build_cuda_wheels.sh     # another version
#
# mamba-ssm 2.3.x needs triton >= 3.5. Importing the wheel needs an empty stand-in module for
# selective_scan_cuda (tests/gpu/conftest.py registers one); the product never imports it directly.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PY:-$ROOT/.venv/bin/python}"
WHEEL_DIR="${WHEEL_DIR:-$ROOT/wheels}"
MAMBA_SSM_VERSION="${MAMBA_SSM_VERSION:-2.3.2.post1}"
CAUSAL_CONV1D_VERSION="${CAUSAL_CONV1D_VERSION:-1.7.0}"

# Their setup.py files import torch (in the venv), setuptools and packaging: add only what is missing.
"$PY" -c "import setuptools, packaging, torch" 2>/dev/null || "$PY" -m pip install -q setuptools packaging

mkdir -p "$WHEEL_DIR"
# one version of each package: pip refuses to install two from the same folder
for old in "$WHEEL_DIR"/mamba_ssm-*.whl "$WHEEL_DIR"/causal_conv1d-*.whl; do
    if [ -e "$old" ]; then echo "removing $old"; rm -f "$old"; fi
done
build() {  # build <requirement> <VAR=value>...
    local req="$1"; shift
    env "$@" "$PY" -m pip wheel -q --no-deps --no-build-isolation --no-cache-dir -w "$WHEEL_DIR" "$req"
}
build "mamba-ssm==$MAMBA_SSM_VERSION" MAMBA_FORCE_BUILD=TRUE MAMBA_SKIP_CUDA_BUILD=TRUE
build "causal-conv1d==$CAUSAL_CONV1D_VERSION" CAUSAL_CONV1D_FORCE_BUILD=TRUE CAUSAL_CONV1D_SKIP_CUDA_BUILD=TRUE

for w in "$WHEEL_DIR/mamba_ssm-$MAMBA_SSM_VERSION-"*.whl "$WHEEL_DIR/causal_conv1d-$CAUSAL_CONV1D_VERSION-"*.whl; do
    if "$PY" -c "import sys, zipfile; sys.exit(any(n.endswith('.so') for n in zipfile.ZipFile(sys.argv[1]).namelist()))" "$w"; then
        echo "built $w"
    else
        echo "error: $w holds a compiled extension" >&2
        exit 1
    fi
done
