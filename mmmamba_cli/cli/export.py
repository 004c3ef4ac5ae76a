"""`mmmamba export`: write a model in the released mmMamba layout or HoVLE's."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import ConfigPath, Force, console


def command(
    model: Annotated[Path, typer.Argument(help="Model directory or state-dict file (ours, HoVLE or mmMamba).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory.")],
    format: Annotated[str, typer.Option(
        "--format", help="mmmamba-release (any layer layout: the hustvl/mmMamba-* layout) or hovle "
                         "(all-attention models).")] = "mmmamba-release",
    shard_gb: Annotated[float, typer.Option("--shard-gb", help="Largest safetensors shard, in GiB.")] = 2.0,
    config: ConfigPath = None,
    force: Force = False,
) -> None:
    """Export a teacher, linear or hybrid model so the released mmMamba / HoVLE code can run it."""
    from ..errors import UserError
    from ..io.release_export import export_model

    if shard_gb <= 0:
        raise UserError(f"--shard-gb {shard_gb}: must be positive")
    r = export_model(model, out, format, force, config, int(shard_gb * 1024 ** 3),
                     log=lambda m: console.print(f"[dim]{m}"))
    console.print(f"exported {r.kind} model as [bold]{r.format}[/] ({' '.join(r.layer_blocks)}) -> "
                  f"[bold]{r.out}[/] ({len(r.files)} files)")
