"""`mmmamba generate`: answer a prompt (optionally about an image) with any model."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import TrustRemoteCode, console


def command(
    model: Annotated[Path, typer.Argument(help="Model directory (teacher, linear or hybrid).")],
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="The user message.")],
    image: Annotated[Optional[Path], typer.Option("--image", "-i", help="An image to ask about.")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Most tokens to generate.")] = 64,
    temperature: Annotated[float, typer.Option(help="0 = greedy.")] = 0.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Generate an answer: prefill once, then decode token by token with the hybrid cache."""
    from ..chat import answer
    from ..io.tokenizer import allow_remote_code

    with allow_remote_code(trust_remote_code):
        text = answer(model, prompt, image, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                      seed=seed)
    console.print(text, highlight=False, markup=False)
