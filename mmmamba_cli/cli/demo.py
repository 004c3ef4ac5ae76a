"""`mmmamba demo`: the whole method on the embedded default, one table at the end."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from .common import Force, console
from .progress import step_progress


def command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory.")] = Path("runs/demo"),
    recipe: Annotated[Optional[str], typer.Option(help="Demo recipe name in recipes/ or a YAML path.")] = "demo",
    overrides: Annotated[Optional[list[str]], typer.Argument(
        help="key=value recipe overrides, e.g. eval.limit=500 distill.overrides=[train.steps=20].")] = None,
    force: Force = False,
) -> None:
    """Seed -> distill stages 1, 2, 3 -> hybrid + stage 3 -> easy-vqa eval -> long-context bench."""
    from ..demo import demo_recipe_from, run_demo
    from ..demo.report import table
    from ..io.files import check_output_dir

    r = demo_recipe_from(recipe, overrides or [])
    check_output_dir(out, force)  # a taken, file-blocked or unwritable location fails before any work
    with step_progress() as progress:
        report = run_demo(r, out, force=force, log=progress.log, progress=progress)
    labels, rows = table(report)
    t = Table(title="mmmamba demo: easy-vqa test split")
    t.add_column("")
    for k in labels:
        t.add_column(k, justify="right")
    for name, cells in rows:
        t.add_row(name, *cells)
    console.print(t)
    console.print(f"report: {out / 'report.md'}, {out / 'report.png'}, {out / 'report.json'}")
