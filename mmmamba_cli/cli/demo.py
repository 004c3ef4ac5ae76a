"""`mmmamba demo`: the whole method on the embedded default, one table at the end."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from .common import Force, console


def command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory.")] = Path("runs/demo"),
    recipe: Annotated[Optional[str], typer.Option(help="Demo recipe name in recipes/ or a YAML path.")] = "demo",
    overrides: Annotated[Optional[list[str]], typer.Argument(help="key=value recipe overrides.")] = None,
    force: Force = False,
) -> None:
    """Seed -> distill stages 1, 2, 3 -> hybrid + stage 3 -> easy-vqa eval -> long-context bench."""
    from ..io.files import check_output_dir
    from ..pipeline.demo import demo_recipe_from, run_demo

    r = demo_recipe_from(recipe, overrides or [])
    check_output_dir(out, force)  # a taken, file-blocked or unwritable location fails before any work
    report = run_demo(r, out, force=force, log=lambda m: console.print(m, highlight=False, markup=False))
    render(report)
    console.print(f"report: {out / 'report.md'}, {out / 'report.png'}, {out / 'report.json'}")


def render(report: dict) -> None:
    labels = [k for k in ("teacher", "linear", "hybrid", "seeded") if k in report]
    t = Table(title="mmmamba demo: easy-vqa test split")
    t.add_column("")
    for k in labels:
        t.add_column(k, justify="right")
    t.add_row("accuracy", *[f"{report[k]['accuracy']:.4f}" for k in labels])
    t.add_row("retention", *[f"{report[k]['retention']:.3f}" for k in labels])
    n = report["bench"].get("longest_tokens")
    if n:
        def b(k, key, fmt):
            row = report[k].get("bench")
            return "-" if not row or row.get(key) is None else fmt(row[key])
        t.add_row(f"prefill s @ {n}", *[b(k, "prefill_s", lambda v: f"{v:.3f}") for k in labels])
        t.add_row(f"decode ms/tok @ {n}", *[b(k, "decode_s_per_token", lambda v: f"{1000 * v:.2f}") for k in labels])
        t.add_row(f"peak MB @ {n}", *[b(k, "peak_mem_bytes", lambda v: f"{v / 2**20:.0f}") for k in labels])
        t.add_row(f"decode state MB @ {n}", *[b(k, "cache_bytes", lambda v: f"{v / 2**20:.2f}") for k in labels])
    console.print(t)
