"""CPU micro-benchmark of the SSD scan: ours (``ssd_chunked``) vs transformers' pure-torch Mamba-2 scan.

    python benchmarks/bench_ssd.py --out benchmarks/results/ssd_cpu.json     # or: make bench-ssd

The baseline is ``transformers.models.mamba2.modeling_mamba2.mamba2_chunk_scan`` with its hub/mamba-ssm
wrapper peeled off: the torch path that ``Mamba2Mixer`` runs without kernels. Both get the same
inputs (dt already positive, ngroups = nheads, no D) and the same chunk size. Repeats are
interleaved across implementations so that load from other processes hits all of them alike.
"""
from __future__ import annotations

import argparse
import datetime
import inspect
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers
from transformers.models.mamba2 import modeling_mamba2

from mmmamba_cli.ops import ssd_chunked


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/ssd_cpu.json"))
    p.add_argument("--lengths", type=int, nargs="+", default=[4096, 16384, 32768])
    p.add_argument("--chunk-sizes", type=int, nargs="+", default=[64, 128])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--nheads", type=int, default=4)
    p.add_argument("--headdim", type=int, default=64, help="p, and d_state n (they are equal here)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    return p.parse_args()


def baseline_scan():
    fn = getattr(modeling_mamba2, "mamba2_chunk_scan", None)
    if fn is None:
        sys.exit(f"transformers {transformers.__version__} has no modeling_mamba2.mamba2_chunk_scan")
    return inspect.unwrap(fn)  # the torch function under the kernel-dispatch decorator


def make_inputs(b: int, l: int, h: int, d: int, seed: int = 0) -> tuple[list[torch.Tensor], list]:
    """Leaf inputs (x, dt, A, B, C) and upstream gradients (for y and the final state)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, l, h, d, generator=g)
    dt = F.softplus(torch.randn(b, l, h, generator=g) - 3.0)
    A = -(0.5 + 2 * torch.rand(h, generator=g))
    B = torch.randn(b, l, h, d, generator=g) / d**0.5
    C = torch.randn(b, l, h, d, generator=g) / d**0.5
    grads_out = [torch.randn(b, l, h, d, generator=g), torch.randn(b, h, d, d, generator=g)]
    return [t.requires_grad_() for t in (x, dt, A, B, C)], grads_out


def timed(fn, inputs: list[torch.Tensor], grads_out: list[torch.Tensor], backward: bool) -> float:
    for t in inputs:
        t.grad = None
    t0 = time.perf_counter()
    if backward:
        y, S = fn(*inputs)
        torch.autograd.backward([y, S], grads_out)
    else:
        with torch.no_grad():
            fn(*inputs)
    return time.perf_counter() - t0


def run(args: argparse.Namespace) -> list[dict]:
    theirs = baseline_scan()
    impls = {}
    for q in args.chunk_sizes:
        impls[("transformers", q)] = lambda x, dt, A, B, C, q=q: theirs(x, dt, A, B, C, chunk_size=q,
                                                                        return_final_states=True)
        impls[("ours", q)] = lambda x, dt, A, B, C, q=q: ssd_chunked(x, dt, A, B, C, chunk_size=q)
    rows = []
    for l in args.lengths:
        inputs, grads_out = make_inputs(args.batch, l, args.nheads, args.headdim)
        for mode, backward in (("fwd", False), ("fwd+bwd", True)):
            times = {k: [] for k in impls}
            for rep in range(args.repeats + 1):  # rep 0 warms up
                for key, fn in impls.items():
                    t = timed(fn, inputs, grads_out, backward)
                    if rep:
                        times[key].append(t)
            for (impl, q), ts in times.items():
                rows.append({"impl": impl, "chunk_size": q, "seq_len": l, "mode": mode,
                             "median_s": statistics.median(ts), "min_s": min(ts), "times_s": ts})
            print(f"  done L={l} {mode}", file=sys.stderr, flush=True)
    return rows


def speedups(rows: list[dict]) -> list[dict]:
    by = {(r["impl"], r["chunk_size"], r["seq_len"], r["mode"]): r["median_s"] for r in rows}
    return [{"seq_len": l, "mode": m, "chunk_size": q, "transformers_s": t, "ours_s": by[("ours", q, l, m)],
             "speedup": t / by[("ours", q, l, m)]}
            for (impl, q, l, m), t in by.items() if impl == "transformers"]


def table(sp: list[dict]) -> str:
    lines = ["| tokens | pass | chunk | transformers (s) | ours (s) | speed-up |",
             "|---:|---|---:|---:|---:|---:|"]
    lines += [f"| {s['seq_len']} | {s['mode']} | {s['chunk_size']} | {s['transformers_s']:.3f} | "
              f"{s['ours_s']:.3f} | {s['speedup']:.2f}x |" for s in sp]
    return "\n".join(lines)


def git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def machine() -> dict:
    cpu = platform.processor()
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                   if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "loadavg_1m_at_start": os.getloadavg()[0]}


def write_json(path: Path, payload: dict) -> None:
    """Atomic: a temporary file in the same folder, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(payload, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    info = machine()
    t0 = time.perf_counter()
    rows = run(args)
    sp = speedups(rows)
    payload = {
        "benchmark": "ssd_cpu", "command": " ".join([Path(sys.executable).name] + sys.argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_sha": git("rev-parse", "HEAD") or "unknown",
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "machine": info | {"loadavg_1m_at_end": os.getloadavg()[0]},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "baseline": "transformers.models.mamba2.modeling_mamba2.mamba2_chunk_scan (torch path)",
        "config": {"batch": args.batch, "nheads": args.nheads, "headdim": args.headdim,
                   "d_state": args.headdim, "ngroups": args.nheads, "dtype": "float32",
                   "repeats": args.repeats, "warmup": 1, "statistic": "median"},
        "wall_s": time.perf_counter() - t0, "rows": rows, "speedups": sp,
    }
    write_json(args.out, payload)
    print(table(sp))
    print(f"wrote {args.out} in {payload['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
