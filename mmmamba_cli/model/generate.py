"""Prefill once, then decode one token at a time with the hybrid cache."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .model import MMModel


@dataclass
class SamplingSettings:
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    eos_token_id: int | None = None
    seed: int | None = None


def sample_next(logits: torch.Tensor, s: SamplingSettings, generator=None) -> torch.Tensor:
    """logits (b, V) -> token ids (b,)."""
    if s.temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / s.temperature, -1)
    if s.top_p < 1.0:
        sorted_p, idx = probs.sort(-1, descending=True)
        drop = sorted_p.cumsum(-1) - sorted_p > s.top_p  # keep the smallest set reaching top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, idx, sorted_p)
    return torch.multinomial(probs / probs.sum(-1, keepdim=True), 1, generator=generator)[:, 0]


@torch.no_grad()
def generate(model: MMModel, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None,
             attention_mask: torch.Tensor | None = None, settings: SamplingSettings | None = None,
             ) -> list[list[int]]:
    """Generate up to ``max_new_tokens`` per row (left-padded batches allowed).

    Returns the new token ids of each row, without the EOS token.
    """
    s = settings or SamplingSettings()
    eos = s.eos_token_id if s.eos_token_id is not None else model.config.eos_token_id
    gen = torch.Generator(device=input_ids.device).manual_seed(s.seed) if s.seed is not None else None
    b, l = input_ids.shape
    cache = model.new_cache(b, capacity=l + s.max_new_tokens)
    logits = model(input_ids, pixel_values, attention_mask, cache=cache, logits_to_keep=1)[:, -1]
    out: list[list[int]] = [[] for _ in range(b)]
    done = torch.zeros(b, dtype=torch.bool, device=input_ids.device)
    for step in range(s.max_new_tokens):
        nxt = sample_next(logits, s, gen)
        for i in range(b):
            if not done[i]:
                if eos is not None and int(nxt[i]) == eos:
                    done[i] = True
                else:
                    out[i].append(int(nxt[i]))
        if bool(done.all()) or step == s.max_new_tokens - 1:
            break
        logits = model(nxt[:, None], cache=cache)[:, -1]
    return out
