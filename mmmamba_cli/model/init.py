"""Random weights for a model trained from scratch or timed without real weights."""
from __future__ import annotations

import math

import torch

from .mamba2 import Mamba2
from .model import MMModel

OUTPUT_PROJECTIONS = ("o_proj.weight", "out_proj.weight", "w2.weight")


@torch.no_grad()
def init_weights(model: MMModel, seed: int = 0, std: float = 0.02) -> MMModel:
    """GPT-style: N(0, std) for every matrix (output projections scaled by 1/sqrt(2 * layers)), biases 0,
    norms 1, the Mamba-2 parameters attention lacks by their seeding rule. Works on ``to_empty`` models."""
    device = next(model.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    std_out = std / math.sqrt(2 * len(model.layers))
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            p.zero_()
        elif "norm" in name:
            p.fill_(1.0)
        elif p.dim() >= 2:
            scale = std_out if name.endswith(OUTPUT_PROJECTIONS) else std
            p.copy_(torch.randn(p.shape, generator=g, device=device, dtype=p.dtype) * scale)
    for m in model.modules():
        if isinstance(m, Mamba2):
            m.reset_new_parameters()
    return model
