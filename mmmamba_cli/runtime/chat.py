"""What ``mmmamba generate`` runs: a model directory, a prompt and an optional image in, the answer
out, streamed piece by piece as it is decoded."""
from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import UserError
from ..io.tokenizer import load_tokenizer
from .generate import generate
from .sampling import SamplingSettings
from .text import TextWatch


def answer(model_path, prompt: str, image=None, max_new_tokens: int = 64, temperature: float = 0.0,
           top_p: float = 1.0, seed: int = 0, stream: Callable[[str], None] | None = None,
           stop: list[str] | None = None, raw: bool = False) -> str:
    """The model's answer to ``prompt`` (about ``image``) in its chat format (see
    :mod:`mmmamba_cli.data.prompt`); ``raw``: the continuation of ``prompt`` itself, without a chat
    wrapper. ``stream`` receives the answer as it grows."""
    from ..data import load_image
    from ..data.errors import RecordError
    from ..data.prompt import prompt_ids
    from ..io.load import load_model

    model, info = load_model(model_path)
    tok = load_tokenizer(info.tokenizer_dir, model_path)
    cfg = model.config
    pixels, tiles = None, []
    if image is not None:
        if cfg.vision is None:
            raise UserError(f"{model_path} is a text-only model: it cannot take --image")
        try:
            pixels = load_image(image, cfg.vision)
        except RecordError as e:
            raise UserError(str(e)) from None
        if raw:
            raise UserError("--raw continues text: it cannot take --image")
        tiles = [pixels.shape[0]]
        prompt = "<image>\n" + prompt
    ids = torch.tensor([prompt_ids(tok, cfg, prompt, tiles, raw=raw)])
    watch = TextWatch(tok, 1, stop, stream, cfg.eos_token_id)
    generate(model, ids, pixels, settings=SamplingSettings(max_new_tokens, temperature, top_p, cfg.eos_token_id,
                                                           seed), on_step=watch)
    watch.finish()
    return watch.text(0)
