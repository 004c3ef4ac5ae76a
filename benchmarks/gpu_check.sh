#!/usr/bin/env bash
# Every GPU check in one call (`make gpu-check`, or on a GPU machine: OUT=$OUT bash benchmarks/gpu_check.sh):
#   1. kernel-vs-reference parity of the SSD scan and the decode step (outputs, final states,
#      gradients; fp32 and bf16; lengths that are not multiples of the chunk size), the CUDA-graph
#      decoder and batched evaluation on GPU (pytest -m gpu);
#   2. unless GPU_CHECK_BENCH=0, the HoVLE-2.6B-shape benchmark (benchmarks/gpu_bench.sh).
# Results go under $OUT (default runs/gpu): pytest log + junit XML, bench JSON/markdown/plot.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-runs/gpu}"
PY="${PY:-python3}"
SITE="${TMPDIR:-/tmp}/mmmamba-gpu-site"
mkdir -p "$OUT" "$SITE"
has() { "$PY" -c "import importlib.util as u, sys; sys.exit(u.find_spec('$1') is None)" 2>/dev/null; }
has mamba_ssm || "$PY" -m pip install -q --no-deps --no-index --no-compile --target "$SITE" wheels/mamba_ssm-*.whl
for dep in typer rich yaml; do has $dep || echo "note: $dep missing on this machine (not needed by the GPU tests)"; done
export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())" \
    | tee "$OUT/versions.txt"
"$PY" -m pytest -q -m gpu -p no:cacheprovider --junitxml="$OUT/gpu_tests.xml" ${GPU_TESTS:-tests/gpu tests/test_eval_gpu.py tests/test_bench.py} \
    2>&1 | tee "$OUT/gpu_tests.log"
status=${PIPESTATUS[0]}
if [ "${GPU_CHECK_BENCH:-1}" != "0" ]; then
    OUT="$OUT" bash benchmarks/gpu_bench.sh || status=1
fi
exit "$status"
