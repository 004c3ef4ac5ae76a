"""AdamW with no weight decay on biases/A_log/dt_bias/norms, and the Warmup-Stable-Decay schedule."""
from __future__ import annotations

import torch
from torch import nn

from .schema import OptimSection
from .stages import decays


def make_optimizer(params: dict[str, nn.Parameter], optim: OptimSection) -> torch.optim.AdamW:
    decay = [p for name, p in params.items() if decays(name)]
    no_decay = [p for name, p in params.items() if not decays(name)]
    groups = [{"params": decay, "weight_decay": optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=optim.lr, betas=tuple(optim.betas),
                             eps=optim.eps)


def wsd_factor(step: int, total: int, warmup: float, decay: float, min_ratio: float) -> float:
    """LR multiplier of the update made at ``step`` (0-based) out of ``total``.

    Warmup rises linearly to 1 over W = round(warmup * total) steps (1/W, 2/W, ..., 1), stays at 1,
    then the last D = round(decay * total) steps fall linearly towards ``min_ratio``, which the
    schedule reaches one step after the last (the last update still uses a small, non-zero lr).
    """
    w, d = round(warmup * total), round(decay * total)
    if step < w:
        return (step + 1) / w
    if d and step >= total - d:
        return min_ratio + (1.0 - min_ratio) * (total - step) / (d + 1)
    return 1.0


def wsd_scheduler(optimizer: torch.optim.Optimizer, total: int, optim: OptimSection):
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: wsd_factor(step, total, optim.warmup, optim.decay, optim.min_lr_ratio))
