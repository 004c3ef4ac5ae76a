"""`mmmamba bench`: prefill, decode and memory of teacher / linear / hybrid against context length."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from .common import Force, Out, Seed, TrustRemoteCode, console
from .progress import step_progress

DEFAULT_OUT = Path("runs/bench")


def command(
    overrides: Annotated[Optional[list[str]], typer.Argument(
        help="Settings overrides key=value with dotted keys, e.g. sweep.decode_steps=8 runtime.graphs=off "
             "(sections: models, sweep, fixed_prompt, runtime).")] = None,
    tokens: Annotated[str, typer.Option(help="Context lengths, k = 1024: e.g. 1k,4k,32k,103000,128k.")]
    = "1k,2k,4k,8k,16k,32k",
    models: Annotated[str, typer.Option(help="Models to compare: teacher,linear,hybrid (hybrid keeps "
                                        "attention in every 4th layer from 0, the paper's placement).")]
    = "teacher,linear,hybrid",
    size: Annotated[str, typer.Option(help="Shape preset, random weights: tiny | hovle-2.6b.")] = "tiny",
    model: Annotated[Optional[Path], typer.Option(
        "--model", help="Model directory: its shapes for every variant, its weights for its own kind.")] = None,
    dtype: Annotated[str, typer.Option(help="auto (bfloat16 on CUDA, float32 on CPU) | float32 | bfloat16 | "
                                       "float16.")] = "auto",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda[:N].")] = "auto",
    teacher_impl: Annotated[str, typer.Option(
        help="Teacher decode attention: sdpa (KV read once, fused) | eager (KV repeated per head, fp32 "
             "softmax: the paper's setting). Prefill always uses SDPA.")] = "sdpa",
    steps: Annotated[int, typer.Option(help="Timed decode steps per cell (median reported).")] = 32,
    warmup: Annotated[int, typer.Option(help="Untimed decode steps before them.")] = 4,
    repeats: Annotated[int, typer.Option(help="Timed prefills per cell (median reported).")] = 3,
    fixed_prompt: Annotated[bool, typer.Option(help="Also run the paper's fixed-prompt test (one image, "
                                               "'Describe the image specifically').")] = True,
    new_tokens: Annotated[int, typer.Option(help="New tokens in the fixed-prompt test.")] = 256,
    graphs: Annotated[str, typer.Option(help="CUDA-graph decode step: auto (on CUDA) | on | off.")] = "auto",
    impl: Annotated[str, typer.Option(help="Mamba scan: auto (mamba-ssm kernels on CUDA when installed) | "
                                      "torch | kernel.")] = "auto",
    threads: Annotated[Optional[int], typer.Option(
        help="torch CPU threads (default: 1 on a CPU device, where batch-1 decode ops are too small to "
             "split and a shared machine makes threads wait on each other).")] = None,
    bandwidth: Annotated[Optional[float], typer.Option(
        help="Memory bandwidth in GB/s for the decode floor (default: from the GPU's name).")] = None,
    out: Out = None,
    force: Force = False,
    seed: Seed = 0,
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Benchmark prefill latency, per-token decode latency and peak memory against context length."""
    from ..bench.runner import failures, run_bench, write_results
    from ..bench.settings import bench_settings
    from ..errors import UserError
    from ..io.files import check_output_dir
    from ..io.tokenizer import allow_remote_code

    out = out if out is not None else DEFAULT_OUT
    settings = bench_settings({
        "models": {"kinds": models, "size": size, "model_dir": str(model) if model else None, "dtype": dtype,
                   "device": device, "teacher_impl": teacher_impl, "impl": impl},
        "sweep": {"tokens": tokens, "decode_steps": steps, "warmup_steps": warmup, "repeats": repeats},
        "fixed_prompt": {"enabled": fixed_prompt, "new_tokens": new_tokens},
        "runtime": {"graphs": graphs, "threads": threads, "bandwidth": bandwidth * 1e9 if bandwidth else None},
        "seed": seed}, overrides)
    check_output_dir(out, force)  # fail before measuring, not after
    cmd = "mmmamba " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    with step_progress() as progress, allow_remote_code(trust_remote_code):  # fixed-prompt reads the tokenizer
        progress.phase("bench")
        result = run_bench(settings, log=progress.log, command=cmd)
    write_results(result, out, force)
    console.print(_table(result))
    for m, sl in result["slopes"].items():
        console.print(f"{m}: log-log slope prefill {_n(sl['prefill'])}, decode {_n(sl['decode'])}")
    console.print(f"wrote [bold]{out}[/]/bench.json, bench.md, bench.png")
    failed = failures(result)
    if failed:
        raise UserError(f"{len(failed)} cell(s) failed (results kept in {out}): {failed[0]}")


def _n(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def _table(result: dict) -> Table:
    t = Table(title=f"mmmamba bench ({result['environment']['device']['name']}, {result['dtype']})")
    for col in ("model", "tokens", "prefill s", "decode ms/tok", "peak MiB", "vs teacher", "OOM"):
        t.add_column(col, justify="right")
    for r in result["rows"]:
        ratio = f"{r['decode_speedup']:.1f}x, {r['peak_mem_change'] * 100:+.0f}%" if "decode_speedup" in r else ""
        t.add_row(r["model"], str(r["tokens"]), _n(r["prefill_s"]),
                  _n(r["decode_s_per_token"] * 1e3) if r["decode_s_per_token"] else "-",
                  f"{r['peak_mem_bytes'] / 2 ** 20:.0f}" if r["peak_mem_bytes"] else "-", ratio,
                  "yes" if r["oom"] else "")
    return t
