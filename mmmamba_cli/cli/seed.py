"""`mmmamba seed`: carve a Mamba-2 student out of a teacher."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import (DEFAULT_RUN_DIR, AttnLayers, ConfigPath, Force, Out, Seed, TrustRemoteCode, console,
                     option_errors)


def seed(
    teacher: Annotated[Optional[Path], typer.Argument(
        help="HoVLE snapshot dir, Llama-family HF dir, or .safetensors/.pt/.ckpt file "
             "(default: the embedded tiny HoVLE teacher).")] = None,
    out: Out = None,
    run_dir: Annotated[Path, typer.Option("--run-dir", "-r", help="Run directory; output goes to RUN/seed.")]
    = DEFAULT_RUN_DIR,
    attn_layers: AttnLayers = None,
    config: ConfigPath = None,
    force: Force = False,
    seed: Seed = 0,
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Seed a linear (or hybrid) Mamba-2 student from a teacher's attention weights."""
    from ..assets import default_teacher
    from ..io.tokenizer import allow_remote_code
    from ..seed import seed_directory

    teacher = teacher if teacher is not None else default_teacher()
    out = out if out is not None else run_dir / "seed"
    with option_errors(), allow_remote_code(trust_remote_code):  # with it, the teacher's tokenizer code is copied too
        report = seed_directory(teacher, out, attn_layers, config, force, seed,
                                log=lambda m: console.print(f"[dim]{m}"))
    mamba = len(report["layer_types"]) - len(report["attention_layers"])
    console.print(f"seeded [bold]{mamba}[/] Mamba-2 layers "
                  f"({len(report['moved'])} tensors moved, {len(report['new'])} new), "
                  f"attention kept at {report['attention_layers'] or 'none'} -> [bold]{out}[/]")
