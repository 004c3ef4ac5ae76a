"""The paper's fixed-prompt test: one image, "Describe the image specifically", 256 new tokens.

Reported: total seconds from the prompt to the last new token (prefill with the image + greedy
decoding) and new tokens per second, with the fast decoder (static step, CUDA graph on a GPU),
and once with the library's plain ``generate()`` for reference. The decoder is built and its
graph captured once per model, before timing, and reused for every timed request, as a server
would. Without a tokenizer (random-weight presets) the prompt has the template's layout with
stand-in text ids; the image tokens are real (one tile through the vision stem).
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..data import build_prompt
from ..io.tokenizer import load_tokenizer
from ..model.cache import HybridCache, KVState
from ..model.generate import SamplingSettings, generate
from ..model.model import MMModel
from .cell import random_ids
from .settings import BenchSettings
from .static_decode import StaticDecoder, static_decode_supported
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


def reset_cache(cache: HybridCache) -> None:
    """Empty a cache in place (same tensors), so a captured decoder can serve the next prompt."""
    for s in cache.layers:
        if isinstance(s, KVState):
            s.length = 0
        else:
            s.conv.zero_()
            s.ssm.zero_()
    cache.mask = cache.mask[:, :0]
    cache.next_pos.zero_()


def run_fixed_prompt(model: MMModel, kind: str, settings: BenchSettings, device: torch.device,
                     tokenizer_dir: Path | None = None) -> dict:
    ids, pixels, how = prompt_inputs(model, tokenizer_dir, device, settings.seed)
    n = settings.new_tokens
    row = {"model": kind, "prompt_tokens": int(ids.shape[1]), "new_tokens": n, "prompt": how}
    if static_decode_supported(model.config):
        row["note"] = "static decoding unsupported: only generate() timed"
    else:
        cache = model.new_cache(1, ids.shape[1] + n + 1)
        model(ids, pixels, cache=cache, logits_to_keep=1)  # warm-up, then capture once
        dec = StaticDecoder(model, cache, graphs=settings.switch("graphs"), compile=settings.switch("compile"),
                            attention=settings.teacher_impl)

        def request() -> None:
            reset_cache(cache)
            tok = model(ids, pixels, cache=cache, logits_to_keep=1)[:, -1].argmax(-1)
            dec.rebind()
            for _ in range(n - 1):
                tok = dec.step(tok).argmax(-1)

        request()  # warm-up
        total = median([timed(request, device)[1].wall for _ in range(settings.repeats)])
        row.update(total_s=total, tokens_per_s=n / total, cuda_graph=dec.graph is not None)
        del dec, cache
    sampling = SamplingSettings(max_new_tokens=n, eos_token_id=-1)
    out, t = timed(lambda: generate(model, ids, pixels, settings=sampling), device)
    row.update(generate_total_s=t.wall, generate_tokens_per_s=len(out[0]) / t.wall)
    return row
