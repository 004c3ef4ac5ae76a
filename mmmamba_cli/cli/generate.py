"""`mmmamba generate`: answer a prompt (optionally about an image) with any model, streamed."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import console


def command(
    model: Annotated[Path, typer.Argument(help="Model directory (teacher, linear or hybrid).")],
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="The user message.")],
    image: Annotated[Optional[Path], typer.Option("--image", "-i", help="An image to ask about.")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Most tokens to generate.")] = 64,
    temperature: Annotated[float, typer.Option(help="0 = greedy.")] = 0.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    stop: Annotated[Optional[list[str]], typer.Option("--stop", help="End the answer at this text "
                                                      "(repeatable).")] = None,
) -> None:
    """Generate an answer: prefill once, then decode token by token, printing as it goes."""
    from ..runtime.chat import answer

    def show(piece: str) -> None:
        console.print(piece, end="", highlight=False, markup=False, soft_wrap=True)

    answer(model, prompt, image, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
           seed=seed, stream=show, stop=stop)
    console.print()
