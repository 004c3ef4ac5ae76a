"""One cache for every layer type: KV for attention layers, conv + SSM state for Mamba layers."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import ATTENTION, ModelConfig


@dataclass
class KVState:
    k: torch.Tensor  # (b, hkv, capacity, d)
    v: torch.Tensor  # (b, hkv, capacity, d)
    length: int = 0

    def append(self, k_new: torch.Tensor, v_new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append (b, hkv, l, d) and return views over everything cached so far."""
        end = self.length + k_new.shape[2]
        if end > self.k.shape[2]:  # grow geometrically: amortised O(1) per token
            cap = max(end, 2 * self.k.shape[2])
            grow = lambda t: torch.cat([t, t.new_zeros(*t.shape[:2], cap - t.shape[2], t.shape[3])], 2)
            self.k, self.v = grow(self.k), grow(self.v)
        self.k[:, :, self.length:end] = k_new
        self.v[:, :, self.length:end] = v_new
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]

    def nbytes(self) -> int:
        return (self.k.numel() + self.v.numel()) * self.k.element_size()


@dataclass
class SSMState:
    conv: torch.Tensor  # (b, channels, d_conv - 1): the last inputs of the causal conv
    ssm: torch.Tensor   # (b, h, headdim, d_state), fp32

    def nbytes(self) -> int:
        return self.conv.numel() * self.conv.element_size() + self.ssm.numel() * self.ssm.element_size()


class HybridCache:
    """Per-layer decoding state plus the padding mask and next positions of each row.

    ``mask`` (b, seen) marks real tokens (left padding is 0); attention layers read it,
    Mamba layers never see pad tokens because their inputs and dt are zeroed there.
    """

    def __init__(self, config: ModelConfig, batch_size: int, device, dtype, capacity: int = 256):
        self.config = config
        self.layers: list[KVState | SSMState] = []
        for i, kind in enumerate(config.layer_types):
            s = config.shape(i)
            if kind == ATTENTION:
                z = torch.zeros(batch_size, s.num_kv_heads, capacity, s.head_dim, device=device, dtype=dtype)
                self.layers.append(KVState(z, z.clone()))
            else:
                ch = 2 * s.num_kv_heads * s.head_dim + s.num_heads * s.head_dim
                conv = torch.zeros(batch_size, ch, config.mamba.d_conv - 1, device=device, dtype=dtype)
                ssm = torch.zeros(batch_size, s.num_heads, s.head_dim, s.head_dim, device=device,
                                  dtype=torch.float32)
                self.layers.append(SSMState(conv, ssm))
        self.mask = torch.zeros(batch_size, 0, dtype=torch.bool, device=device)
        self.next_pos = torch.zeros(batch_size, dtype=torch.long, device=device)

    @property
    def seen(self) -> int:
        return self.mask.shape[1]

    def nbytes(self) -> int:
        return sum(layer.nbytes() for layer in self.layers)
