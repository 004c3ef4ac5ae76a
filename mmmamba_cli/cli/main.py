"""Entry point: `mmmamba <command>`; known errors become one line on stderr and exit code 2."""
from __future__ import annotations

import typer

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


def _register() -> None:
    from . import seed as seed_cmd

    app.command("seed")(seed_cmd.seed)
    for module, name in (("distill", "distill"), ("hybridize", "hybridize"), ("evaluate", "eval"),
                         ("bench", "bench"), ("demo", "demo"), ("generate", "generate"), ("info", "info"),
                         ("export", "export"), ("train_teacher", "train-teacher")):
        try:
            mod = __import__(f"mmmamba_cli.cli.{module}", fromlist=["command"])
        except ModuleNotFoundError as e:
            if e.name != f"mmmamba_cli.cli.{module}":
                raise
            continue
        app.command(name)(mod.command)


_register()


def main() -> None:
    run_app(app)
