"""How the next token is chosen: greedy, temperature, nucleus (top-p)."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SamplingSettings:
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    eos_token_id: int | None = None  # None: the model's own; -1: never stop at a token
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
