"""Shared option aliases, console and error handling for the commands."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from ..errors import UserError

from .progress import console, err_console  # noqa: F401 - no hard wrap at 80 columns when not on a terminal

DEFAULT_RUN_DIR = Path("runs/default")

Force = Annotated[bool, typer.Option("--force", help="Replace an existing output directory.")]
RunDir = Annotated[Path, typer.Option("--run-dir", "-r", help="Run directory holding seed/, stage1/, ...")]
Out = Annotated[Optional[Path], typer.Option("--out", "-o", help="Output directory.")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed.")]
ConfigPath = Annotated[Optional[Path], typer.Option(
    "--config", help="config.json for a bare state-dict file (HoVLE or mmmamba format).")]
AttnLayers = Annotated[Optional[str], typer.Option(
    "--attn-layers", help="Global layer indices kept as softmax attention, e.g. 0,4,8 (default: none).")]
TrustRemoteCode = Annotated[bool, typer.Option(
    "--trust-remote-code", help="Allow Python files shipped in a model directory (tokenization_*.py) to run "
                                "(also MMMAMBA_TRUST_REMOTE_CODE=1). Without it, no code from a model runs.")]


# library inputs -> the options that carry them, for errors that name an input (model.layout.LayoutError)
FLAGS = {"attn_layers": "--attn-layers", "every": "--every/--offset"}


@contextlib.contextmanager
def option_errors():
    """Re-raise a LayoutError as a UserError that names the command-line option."""
    from ..model.layout import LayoutError  # deferred: model/ imports torch (keeps --help fast)

    try:
        yield
    except LayoutError as e:
        raise UserError(f"{FLAGS.get(e.field, e.field)}: {e}") from None


def debug() -> bool:
    return os.environ.get("MMMAMBA_DEBUG", "") not in ("", "0")


def run_app(app: typer.Typer) -> None:
    """Run a Typer app; a UserError or a bad option becomes one line on stderr and exit code 2."""
    import sys

    click = _click_exceptions()

    try:
        code = app(standalone_mode=False)
    except UserError as e:
        if debug():
            raise
        _one_line(str(e))
        sys.exit(2)
    except click.NoArgsIsHelpError as e:
        e.show()
        sys.exit(e.exit_code)
    except click.ClickException as e:  # bad or missing options and arguments
        if debug():
            raise
        ctx = getattr(e, "ctx", None)
        see = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        _one_line(e.format_message() + see)
        sys.exit(e.exit_code)
    except typer.Abort:
        err_console.print("aborted", highlight=False)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


def _click_exceptions():
    """Typer's click exceptions: recent Typer vendors click as ``typer._click``."""
    try:
        from typer._click import exceptions
    except ImportError:
        from click import exceptions
    return exceptions


def _one_line(message: str) -> None:
    text = " ".join(part.strip() for part in message.strip().splitlines() if part.strip())
    err_console.print(f"[bold red]error:[/] {escape(text)}", highlight=False, soft_wrap=True)
