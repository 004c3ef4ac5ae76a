"""`mmmamba generate`: answer a prompt (optionally about an image) with any model, streamed."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import TrustRemoteCode, console


def command(
    model: Annotated[Path, typer.Argument(help="Model directory (teacher, linear or hybrid).")],
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="The user message.")],
    image: Annotated[Optional[Path], typer.Option("--image", "-i", help="An image to ask about.")] = None,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Most tokens to generate.")] = 64,
    temperature: Annotated[float, typer.Option(min=0.0, help="0 = greedy.")] = 0.0,
    top_p: Annotated[float, typer.Option(min=0.0, max=1.0, help="Nucleus sampling mass (0 < p <= 1).")] = 1.0,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    stop: Annotated[Optional[list[str]], typer.Option("--stop", help="End the answer at this text "
                                                      "(repeatable).")] = None,
    trust_remote_code: TrustRemoteCode = False,
    raw: Annotated[bool, typer.Option(
        "--raw", help="Continue the prompt text itself, without the chat template.")] = False,
) -> None:
    """Generate an answer: prefill once, then decode token by token, printing as it goes."""
    from ..errors import UserError
    from ..io.tokenizer import allow_remote_code
    from ..runtime.chat import answer

    if image is not None and not image.is_file():
        raise UserError(f"--image {image}: no such file")
    if top_p <= 0:
        raise UserError(f"--top-p {top_p}: must be above 0 (1 keeps the whole distribution)")

    def show(piece: str) -> None:
        console.print(piece, end="", highlight=False, markup=False, soft_wrap=True)

    with allow_remote_code(trust_remote_code):
        answer(model, prompt, image, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
               seed=seed, stream=show, stop=stop, raw=raw)
    console.print()
