"""Entry point: `mmmamba <command>`; known errors become one line on stderr and exit code 2."""
from __future__ import annotations

import typer

from . import bench, demo, distill, evaluate, export, generate, hybridize, info, train_teacher
from . import seed as seed_cmd
from .common import run_app

app = typer.Typer(name="mmmamba", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Distil decoder-only (multimodal) Transformers into Mamba-2 and hybrid models.")


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"mmmamba {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Show the version and exit.")) -> None:
    """Distil decoder-only (multimodal) Transformers into Mamba-2 and hybrid models."""


app.command("seed")(seed_cmd.seed)
for _name, _module in (("distill", distill), ("hybridize", hybridize), ("eval", evaluate), ("bench", bench),
                       ("demo", demo), ("generate", generate), ("info", info), ("export", export),
                       ("train-teacher", train_teacher)):
    app.command(_name)(_module.command)


def main() -> None:
    run_app(app)
