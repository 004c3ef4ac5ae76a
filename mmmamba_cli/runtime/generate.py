"""Generation: prefill once, then one ``MMModel.step`` per token through the chosen decoder.

Batched and left-padded prompts, greedy / temperature / top-p, EOS, and a per-step callback
(streaming, stop strings: ``text.py``). The new tokens stay on the device until the end; without
a callback the host looks at them only every ``CHECK_EVERY`` steps, to stop when all rows ended.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from ..model.model import MMModel
from .decoder import make_decoder
from .sampling import SamplingSettings, sample_next

CHECK_EVERY = 8  # steps between the host's looks at "has every row ended?" (no callback)

# called after each step with the new token of every row; may return, per row, "stop it now"
StepCallback = Callable[[list[int]], "list[bool] | None"]


@torch.no_grad()
def generate(model: MMModel, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None,
             attention_mask: torch.Tensor | None = None, settings: SamplingSettings | None = None,
             on_step: StepCallback | None = None, graphs: str = "auto") -> list[list[int]]:
    """Up to ``max_new_tokens`` new token ids per row, without the EOS token.

    ``on_step`` sees each step's tokens (rows that already ended included); a row it stops keeps
    the tokens up to and including that step.
    """
    s = settings or SamplingSettings()
    eos = s.eos_token_id if s.eos_token_id is not None else model.config.eos_token_id
    eos = None if eos is not None and eos < 0 else eos
    b, l = input_ids.shape
    n = max(int(s.max_new_tokens), 0)
    if n == 0:
        return [[] for _ in range(b)]
    device = input_ids.device
    gen = torch.Generator(device=device).manual_seed(s.seed) if s.seed is not None else None
    model.fuse_for_decode()
    cache = model.new_cache(b, capacity=l + n)
    logits = model(input_ids, pixel_values, attention_mask, cache=cache, logits_to_keep=1)[:, -1]
    decoder = make_decoder(model, cache, graphs) if n > 1 else None
    tokens = torch.empty(b, n, dtype=torch.long, device=device)
    ended = torch.zeros(b, dtype=torch.bool, device=device)  # EOS seen
    stopped = [False] * b  # stopped by the callback
    lengths = [n] * b
    try:
        for t in range(n):
            nxt = sample_next(logits, s, gen)  # (b,)
            tokens[:, t] = nxt
            if eos is not None:
                ended |= nxt == eos
            if on_step is not None:
                flags = on_step(nxt.tolist()) or [False] * b
                for i, f in enumerate(flags):
                    if f and not stopped[i]:
                        stopped[i], lengths[i] = True, t + 1
            last = t == n - 1
            if not last and (on_step is not None or (t + 1) % CHECK_EVERY == 0):
                if all(e or st for e, st in zip(ended.tolist(), stopped)):
                    lengths = [min(x, t + 1) for x in lengths]
                    break
            if last:
                break
            logits = decoder.step(nxt)
    finally:
        if decoder is not None:
            decoder.close()
    return [_cut(row[:k], eos) for row, k in zip(tokens.tolist(), lengths)]


def _cut(row: list[int], eos: int | None) -> list[int]:
    return row[:row.index(eos)] if eos is not None and eos in row else row
