"""Shared option aliases, console and error handling for the commands."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from .progress import make_console

console = make_console()  # no hard wrap at 80 columns when not on a terminal
err_console = make_console(stderr=True)

DEFAULT_RUN_DIR = Path("runs/default")

Force = Annotated[bool, typer.Option("--force", help="Replace an existing output directory.")]
RunDir = Annotated[Path, typer.Option("--run-dir", "-r", help="Run directory holding seed/, stage1/, ...")]
Out = Annotated[Optional[Path], typer.Option("--out", "-o", help="Output directory.")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed.")]
ConfigPath = Annotated[Optional[Path], typer.Option(
    "--config", help="config.json for a bare state-dict file (HoVLE or mmmamba format).")]
AttnLayers = Annotated[Optional[str], typer.Option(
    "--attn-layers", help="Global layer indices kept as softmax attention, e.g. 0,4,8 (default: none).")]


def debug() -> bool:
    return os.environ.get("MMMAMBA_DEBUG", "") not in ("", "0")


def run_app(app: typer.Typer) -> None:
    """Run a Typer app; a UserError becomes one line on stderr and exit code 2."""
    import sys

    from ..errors import UserError

    try:
        app(standalone_mode=True)
    except UserError as e:
        if debug():
            raise
        err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
