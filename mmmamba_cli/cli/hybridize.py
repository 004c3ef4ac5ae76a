"""`mmmamba hybridize`: choose which layers stay attention, by rule or by measurement."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from .common import Force, TrustRemoteCode, console, option_errors
from .progress import step_progress


def command(
    student: Annotated[Path, typer.Argument(help="Student model directory (from `mmmamba seed` or a distill stage).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output model directory.")],
    attn_layers: Annotated[Optional[str], typer.Option(
        "--attn-layers", help="Global layer indices to keep as attention, e.g. 0,4,8.")] = None,
    every: Annotated[Optional[int], typer.Option(
        "--every", help="Keep the first layer of every block of N layers (paper: 4).")] = None,
    offset: Annotated[Optional[int], typer.Option(
        "--offset", help="With --every: keep layer OFFSET of each block instead (0 <= OFFSET < N).")] = None,
    count: Annotated[Optional[int], typer.Option(
        "--count", "-k", help="Keep K attention layers, placed by --placement.")] = None,
    placement: Annotated[Optional[str], typer.Option(
        "--placement", help="With --count: first-of-block (default) | last-of-block | top (last K) | "
                            "bottom (first K) | auto (measured on calibration data).")] = None,
    teacher: Annotated[Optional[Path], typer.Option(
        "--teacher", help="Teacher whose attention weights are restored (default: the one the student records).")]
    = None,
    data: Annotated[Optional[str], typer.Option(
        "--data", help="auto: calibration data, a .jsonl file or 'easyvqa' (default: easyvqa's train split for a "
                       "vision student, the data a text-only student was distilled on).")] = None,
    calib_samples: Annotated[Optional[int], typer.Option(
        "--calib-samples", help="auto: number of calibration records (default 64).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="auto: records per forward pass.")] = 8,
    device: Annotated[Optional[str], typer.Option("--device", help="auto: cpu, cuda, ... (default: auto).")] = None,
    score: Annotated[str, typer.Option(
        "--score", help="auto: kl (exact KL drop, re-runs the layers above) | local (mixer error on cached "
                        "layer inputs, one pass) | auto (kl up to 8 Mamba layers, else local).")] = "auto",
    seed: Annotated[int, typer.Option(
        "--seed", help="Seed of the calibration draw and of re-seeded layers.")] = 0,
    force: Force = False,
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Keep some layers of a student as the teacher's original attention; write a hybrid model directory."""
    from ..hybrid import LayoutRequest, hybridize_directory
    from ..io.tokenizer import allow_remote_code

    request = LayoutRequest(attn_layers=attn_layers, every=every, offset=offset, count=count, placement=placement)
    with step_progress() as progress, option_errors(), allow_remote_code(trust_remote_code):
        progress.phase("hybridize")
        report = hybridize_directory(student, out, request, teacher=teacher, data=data, calib_samples=calib_samples,
                                     seed=seed, force=force, device=device, batch_size=batch_size, log=progress.log,
                                     score=score)
    if report["scores"]:
        console.print(_scores_table(report["scores"], report["attention_layers"]))
    console.print(f"attention at [bold]{report['attention_layers']}[/] (added {report['added'] or 'none'}, "
                  f"re-seeded as Mamba {report['reseeded'] or 'none'}) -> [bold]{out}[/]")


def _scores_table(scores: dict, kept: list[int]) -> Table:
    if scores.get("method") == "local":
        t = Table(title=f"layer sensitivity (mixer-output error on cached inputs, {scores['tokens']} tokens)")
        for name in ("rank", "layer", "relative error", "kept"):
            t.add_column(name, justify="right")
        for row in scores["layers"]:
            t.add_row(str(row["rank"]), str(row["layer"]), f"{row['error']:.4f}", "yes" if row["layer"] in kept else "")
        return t
    t = Table(title=f"layer sensitivity (baseline KL {scores['baseline_kl']:.4f} nats/token, "
                    f"{scores['tokens']} tokens)")
    for name in ("rank", "layer", "KL restored", "KL drop", "kept"):
        t.add_column(name, justify="right")
    for row in scores["layers"]:
        t.add_row(str(row["rank"]), str(row["layer"]), f"{row['kl']:.4f}", f"{row['kl_drop']:.4f}",
                  "yes" if row["layer"] in kept else "")
    return t
