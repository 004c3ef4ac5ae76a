#!/usr/bin/env bash
# GPU benchmark at HoVLE-2.6B shapes (random weights): teacher, linear and hybrid, 1K..128K tokens.
#
#   OUT=/tmp/gpu bash benchmarks/gpu_bench.sh          # writes $OUT/bench/bench.{json,md,png}
#   BENCH_SMOKE=1 OUT=... bash benchmarks/gpu_bench.sh # first a 1K-token smoke run into $OUT/smoke
#   BENCH_EAGER=1 OUT=... bash benchmarks/gpu_bench.sh # then the paper's eager teacher vs the linear
#                                                      # student at 103K and 128K into $OUT/eager (+1.5 min)
#
# Called by `make gpu-check`; about 4 minutes on an H100. Needs CUDA and torch. The students'
# prefill uses mamba-ssm's Triton SSD kernels when mamba-ssm imports: a pure-Python wheel in
# wheels/ (benchmarks/build_cuda_wheels.sh) is installed into a scratch folder if it is not
# installed already. A probe compares kernel and reference scans first and falls back to the
# PyTorch scan (--impl torch) if the kernels fail or disagree. Extra arguments go to `mmmamba bench`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

OUT="${OUT:-runs/gpu}"
PY="${PY:-python3}"
TOKENS="${BENCH_TOKENS:-1k,4k,16k,32k,64k,103000,128k}"
SITE="${TMPDIR:-/tmp}/mmmamba-gpu-site"
mkdir -p "$OUT"

has() { "$PY" -c "import importlib.util as u, sys; sys.exit(u.find_spec('$1') is None)" 2>/dev/null; }
# the package itself and mamba-ssm, when this python lacks them (a bare GPU machine)
if ! has mmmamba_cli || { ! has mamba_ssm && ls wheels/mamba_ssm-*.whl >/dev/null 2>&1; }; then
    mkdir -p "$SITE"
    has mmmamba_cli || "$PY" -m pip install -q --no-deps --no-build-isolation --no-index --target "$SITE" .
    has mamba_ssm || "$PY" -m pip install -q --no-deps --no-index --no-compile --target "$SITE" wheels/mamba_ssm-*.whl
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi

run_bench() {  # run_bench <args for mmmamba bench>...
    "$PY" - "$@" <<'PYEOF'
import importlib.util, sys, types

# mamba-ssm's package __init__ imports its compiled extension, absent from a pure-Python build;
# the Triton kernels we use live in submodules, so import those without running the init.
spec = importlib.util.find_spec("mamba_ssm")
if spec is not None and spec.submodule_search_locations:
    pkg = types.ModuleType("mamba_ssm")
    pkg.__path__ = list(spec.submodule_search_locations)
    sys.modules["mamba_ssm"] = pkg

import torch
import torch.nn.functional as F

from mmmamba_cli.ops.kernels import kernels_available, ssd_scan

args = sys.argv[1:]
print(f"torch {torch.__version__}, cuda {torch.version.cuda}, device "
      f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}", flush=True)
if torch.cuda.is_available() and kernels_available() and "--impl" not in args:
    g = torch.Generator(device="cuda").manual_seed(0)
    b, l, h, p = 1, 1000, 16, 128
    x, B, C = (torch.randn(b, l, h, p, device="cuda", generator=g, dtype=torch.bfloat16) for _ in range(3))
    dt = F.softplus(torch.randn(b, l, h, device="cuda", generator=g) - 3)
    A = -torch.rand(h, device="cuda", generator=g) - 0.5
    try:
        yk, sk = ssd_scan(x, dt, A, B, C, 128, impl="kernel")
        yr, sr = ssd_scan(x, dt, A, B, C, 128, impl="torch")
        err = ((yk.float() - yr.float()).norm() / yr.float().norm()).item()
        ok = err < 2e-2
        print(f"mamba-ssm SSD kernel vs reference: relative error {err:.2e} ({'ok' if ok else 'MISMATCH'})")
    except Exception as e:  # noqa: BLE001
        ok = False
        print(f"mamba-ssm SSD kernel failed: {type(e).__name__}: {e}")
    if not ok:
        args += ["--impl", "torch"]
elif "--impl" not in args:
    print("mamba-ssm kernels not available: the students use the PyTorch SSD scan")
if torch.cuda.is_available():
    from torch.nn.attention import SDPBackend, sdpa_kernel
    q = torch.randn(1, 16, 2048, 128, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, 8, 2048, 128, device="cuda", dtype=torch.bfloat16)
    try:
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            F.scaled_dot_product_attention(q, k, k, is_causal=True, enable_gqa=True)
        print("flash attention with grouped KV heads: ok (teacher prefill)")
    except Exception as e:  # noqa: BLE001
        print(f"flash attention with grouped KV heads unavailable ({type(e).__name__}): the teacher's long "
              "prefill may fall back to a slower attention kernel")
sys.stdout.flush()
sys.argv = ["mmmamba", "bench", *args]
from mmmamba_cli.cli.main import main
main()
PYEOF
}

export PYTHONUNBUFFERED=1
if [ -n "${BENCH_SMOKE:-}" ]; then
    run_bench --size hovle-2.6b --dtype bfloat16 --tokens 1k --models teacher,linear,hybrid \
        --steps 8 --repeats 1 --new-tokens 16 --out "$OUT/smoke" --force
fi
run_bench --size hovle-2.6b --dtype bfloat16 --tokens "$TOKENS" --models teacher,linear,hybrid \
    --repeats 2 --out "$OUT/bench" --force "$@"
if [ -n "${BENCH_EAGER:-}" ]; then
    run_bench --size hovle-2.6b --dtype bfloat16 --tokens 103000,128k --models teacher,linear \
        --teacher-impl eager --no-fixed-prompt --repeats 2 --out "$OUT/eager" --force
fi
