"""The paper's fixed-prompt test: one image, "Describe the image specifically", 256 new tokens.

Reported: total seconds from the prompt to the last new token (prefill with the image + greedy
decoding) and new tokens per second of the runtime's ``generate`` — what ``mmmamba generate`` and
``eval`` run (on CUDA that includes capturing the decode step as a graph, once per request). One
untimed request first. Without a tokenizer (random-weight presets) the prompt has the template's
layout with stand-in text ids; the image tokens are real (one tile through the vision stem).
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..data import build_prompt
from ..io.tokenizer import load_tokenizer
from ..model.model import MMModel
from ..runtime import SamplingSettings, generate
from .context_length import random_ids
from .models import set_attention_impl
from .settings import BenchSettings
from .timing import median, timed

QUESTION = "Describe the image specifically"
TEMPLATE_TEXT_TOKENS = (1 + 3 + 1, 1 + 6 + 1 + 3)  # [bos] user-turn <img> | </img> question <|im_end|> assistant-turn


def prompt_inputs(model: MMModel, tokenizer_dir: Path | None, device: torch.device, seed: int = 0):
    """(input_ids (1, L), pixel_values (1, 3, S, S), how the ids were made)."""
    c = model.config
    if c.vision is None or c.img_context_token_id is None:
        return random_ids(model, 32, seed, device), None, "text-only model: 32 random prompt ids"
    n_img, s = c.vision.tokens_per_tile, c.vision.image_size
    pixels = torch.randn(1, 3, s, s, generator=torch.Generator().manual_seed(seed)).to(device)
    if tokenizer_dir is not None and (Path(tokenizer_dir) / "tokenizer_config.json").exists():
        tok = load_tokenizer(Path(tokenizer_dir))
        ids = build_prompt(tok, f"<image>\n{QUESTION}", [1], n_img, c.system_prompt)
        return torch.tensor([ids], device=device), pixels, "chat template, model tokenizer"
    pre, post = (random_ids(model, n, seed + i, device) for i, n in enumerate(TEMPLATE_TEXT_TOKENS))
    ctx = torch.full((1, n_img), c.img_context_token_id, dtype=torch.long, device=device)
    return torch.cat([pre, ctx, post], 1), pixels, "template layout, stand-in text ids (no tokenizer)"


def run_fixed_prompt(model: MMModel, kind: str, settings: BenchSettings, device: torch.device,
                     tokenizer_dir: Path | None = None) -> dict:
    ids, pixels, how = prompt_inputs(model, tokenizer_dir, device, settings.seed)
    n = settings.fixed_prompt.new_tokens
    row = {"model": kind, "prompt_tokens": int(ids.shape[1]), "new_tokens": n, "prompt": how}
    sampling = SamplingSettings(max_new_tokens=n, eos_token_id=-1)
    set_attention_impl(model, settings.models.teacher_impl)
    try:
        def request() -> list[list[int]]:
            return generate(model, ids, pixels, settings=sampling, graphs=settings.runtime.graphs)

        request()  # warm-up
        times = [timed(request, device)[1].wall for _ in range(settings.sweep.repeats)]
    finally:
        set_attention_impl(model, "sdpa")
    total = median(times)
    row.update(total_s=total, tokens_per_s=n / total)
    return row
