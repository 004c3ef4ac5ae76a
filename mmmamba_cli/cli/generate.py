"""`mmmamba generate`: answer a prompt (optionally about an image) with any model."""
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
    raw: Annotated[bool, typer.Option(
        "--raw", help="Continue the prompt text itself, without the chat template.")] = False,
) -> None:
    """Generate an answer: prefill once, then decode token by token with the hybrid cache."""
    from ..chat import answer

    text = answer(model, prompt, image, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                  seed=seed, raw=raw)
    console.print(text, highlight=False, markup=False, soft_wrap=True)  # no hard wrap at the console width
