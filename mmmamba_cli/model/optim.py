"""AdamW with no weight decay on biases/A_log/dt_bias/norms, and the Warmup-Stable-Decay schedule.

One optimiser section and one rule for every training loop here (the distillation stages and the
embedded teacher's training), so both read ``optim.lr=...`` the same way.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

NO_DECAY_SUFFIXES = (".bias", ".A_log", ".dt_bias", "norm.weight")  # AdamW weight decay 0


@dataclass
class OptimSection:
    lr: float = 1e-3
    """Peak learning rate."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.05
    """AdamW weight decay; never applied to biases, A_log, dt_bias or norm weights."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value (0 = no clipping)."""
    warmup: float = 0.1
    """Warmup-Stable-Decay: fraction of the steps warming up linearly from 0."""
    decay: float = 0.1
    """Fraction of the steps decaying linearly to min_lr_ratio * lr, ending on the last step."""
    min_lr_ratio: float = 0.0

    def check(self) -> list[str]:
        """Semantic errors, keys prefixed with ``optim.``."""
        e = []
        if not self.lr > 0:
            e.append(f"optim.lr must be > 0, got {self.lr}")
        for k, v in {"optim.warmup": self.warmup, "optim.decay": self.decay,
                     "optim.min_lr_ratio": self.min_lr_ratio}.items():
            if not 0 <= v <= 1:
                e.append(f"{k} must be within [0, 1], got {v}")
        if self.warmup + self.decay > 1:
            e.append(f"optim.warmup + optim.decay = {self.warmup + self.decay} > 1")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            e.append(f"optim.betas must be two numbers in [0, 1), got {self.betas}")
        e += [f"{k} must be >= 0, got {v}" for k, v in {"optim.weight_decay": self.weight_decay,
                                                        "optim.grad_clip": self.grad_clip}.items() if v < 0]
        return e


def decays(name: str) -> bool:
    """Whether AdamW weight decay applies to the parameter ``name``."""
    return not name.endswith(NO_DECAY_SUFFIXES)


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
