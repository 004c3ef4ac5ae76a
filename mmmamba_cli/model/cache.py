"""One cache for every layer type: KV for attention layers, conv + SSM state for Mamba layers.

The cache owns its invariants. ``seen`` (a host int) counts the slots written so far; ``mask``
(b, capacity) marks which of them hold real tokens (left padding is 0) and ``next_pos`` (b,) is
each row's next position, both on the device, so a decode step needs no host synchronisation.
``advance`` books a new chunk of tokens, ``reset`` empties the cache in place (same tensors, so a
captured CUDA graph stays valid) and ``reorder`` selects rows (beam search). The state sizes
per layer are computed here and nowhere else (``state_bytes``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import ATTENTION, ModelConfig


def conv_channels(config: ModelConfig, layer: int) -> int:
    """Channels of a Mamba layer's causal conv: [x, B, C] = 2 * hkv * d + h * d."""
    s = config.shape(layer)
    return 2 * s.num_kv_heads * s.head_dim + s.num_heads * s.head_dim


def state_bytes(config: ModelConfig, element_size: int) -> dict[str, int]:
    """Decode-state sizes of one sequence: ``kv_per_token`` (all attention layers, K and V in
    ``element_size`` bytes), ``conv`` (all Mamba layers' conv windows, same element size) and
    ``ssm`` (all Mamba layers' fp32 states)."""
    kv = conv = ssm = 0
    for i, kind in enumerate(config.layer_types):
        s = config.shape(i)
        if kind == ATTENTION:
            kv += 2 * s.num_kv_heads * s.head_dim * element_size
        else:
            conv += conv_channels(config, i) * (config.mamba.d_conv - 1) * element_size
            ssm += s.num_heads * s.head_dim * s.head_dim * 4
    return {"kv_per_token": kv, "conv": conv, "ssm": ssm}


@dataclass
class KVState:
    k: torch.Tensor  # (b, hkv, capacity, d)
    v: torch.Tensor  # (b, hkv, capacity, d)
    length: int = 0  # where a full forward writes next (set by ``HybridCache.advance``)

    def append(self, k_new: torch.Tensor, v_new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store (b, hkv, l, d) after ``length`` (the cache has made room); views over all so far."""
        end = self.length + k_new.shape[2]
        self.k[:, :, self.length:end] = k_new
        self.v[:, :, self.length:end] = v_new
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]

    def write_at(self, slot: torch.Tensor, k_new: torch.Tensor, v_new: torch.Tensor) -> None:
        """Store one token (b, hkv, 1, d) at the device-side slot (1,): no host synchronisation."""
        self.k.index_copy_(2, slot, k_new)
        self.v.index_copy_(2, slot, v_new)

    def nbytes(self) -> int:
        return (self.k.numel() + self.v.numel()) * self.k.element_size()


@dataclass
class SSMState:
    conv: torch.Tensor  # (b, channels, d_conv - 1): the last inputs of the causal conv
    ssm: torch.Tensor   # (b, h, headdim, d_state), fp32

    def nbytes(self) -> int:
        return self.conv.numel() * self.conv.element_size() + self.ssm.numel() * self.ssm.element_size()


def _grow(t: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    extra = list(t.shape)
    extra[dim] = size - t.shape[dim]
    return torch.cat([t, t.new_zeros(extra)], dim)


class HybridCache:
    """Per-layer decoding state plus the padding mask and next positions of each row."""

    def __init__(self, config: ModelConfig, batch_size: int, device, dtype, capacity: int = 256):
        self.config = config
        capacity = max(int(capacity), 1)
        self.layers: list[KVState | SSMState] = []
        for i, kind in enumerate(config.layer_types):
            s = config.shape(i)
            if kind == ATTENTION:
                z = torch.zeros(batch_size, s.num_kv_heads, capacity, s.head_dim, device=device, dtype=dtype)
                self.layers.append(KVState(z, z.clone()))
            else:
                conv = torch.zeros(batch_size, conv_channels(config, i), config.mamba.d_conv - 1,
                                   device=device, dtype=dtype)
                ssm = torch.zeros(batch_size, s.num_heads, s.head_dim, s.head_dim, device=device,
                                  dtype=torch.float32)
                self.layers.append(SSMState(conv, ssm))
        self.mask = torch.zeros(batch_size, capacity, dtype=torch.bool, device=device)
        self.next_pos = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.slot = torch.zeros(1, dtype=torch.long, device=device)  # == seen, on the device
        self.seen = 0
        self.max_pos = 0  # host-side bound: 1 + the largest position booked (dynamic-NTK RoPE)
        self.static = False  # True while a captured step attends over the whole capacity

    # ---- sizes -----------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        return self.next_pos.shape[0]

    @property
    def capacity(self) -> int:
        return self.mask.shape[1]

    @property
    def has_kv(self) -> bool:
        return any(isinstance(s, KVState) for s in self.layers)

    def nbytes(self) -> int:
        return sum(layer.nbytes() for layer in self.layers)

    def key_len(self) -> int:
        """Slots an attention layer reads in the current step: all of them under a captured graph."""
        return self.capacity if self.static else self.seen

    # ---- invariants ------------------------------------------------------------------
    def reserve(self, total: int) -> None:
        """Make room for ``total`` slots (geometric growth: amortised O(1) per token)."""
        if total <= self.capacity:
            return
        if self.static:
            raise ValueError(f"the cache is full ({self.capacity} slots) while a captured decoder uses it")
        cap = max(total, 2 * self.capacity)
        for s in self.layers:
            if isinstance(s, KVState):
                s.k, s.v = _grow(s.k, 2, cap), _grow(s.v, 2, cap)
        self.mask = _grow(self.mask, 1, cap)

    def advance(self, valid: torch.Tensor | None, length: int) -> tuple[torch.Tensor, int]:
        """Book ``length`` new tokens per row (valid (b, l) bool, None: all real).

        Returns their positions (b, l) and the slot they start at; afterwards ``seen``,
        ``mask`` and ``next_pos`` include them.
        """
        b, start = self.batch_size, self.seen
        self.reserve(start + length)
        for s in self.layers:
            if isinstance(s, KVState):
                s.length = start
        device = self.next_pos.device
        if valid is None:
            positions = self.next_pos[:, None] + torch.arange(length, device=device)[None]
            self.mask[:, start:start + length] = True
            self.next_pos += length
        else:
            cur = valid.long()
            positions = (self.next_pos[:, None] + torch.cumsum(cur, 1) - 1).clamp(min=0)
            self.mask[:, start:start + length] = valid
            self.next_pos += cur.sum(1)
        self.seen += length
        self.slot.fill_(self.seen)
        self.max_pos += length
        return positions.expand(b, length), start

    def step_positions(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Book one real token per row on the device (a decode step): its positions (b, 1) and
        the slot (1,) it is written to."""
        if self.seen >= self.capacity:
            self.reserve(self.seen + 1)
        pos, slot = self.next_pos[:, None].clone(), self.slot.clone()
        self.mask.index_fill_(1, self.slot, True)
        self.next_pos += 1
        self.slot += 1
        self.seen += 1  # host-side: a captured decoder books its replays itself
        self.max_pos += 1
        return pos, slot

    def reset(self) -> None:
        """Empty the cache in place (same tensors: a captured decoder can serve the next prompt)."""
        for s in self.layers:
            if isinstance(s, SSMState):
                s.conv.zero_()
                s.ssm.zero_()
        self.mask.zero_()
        self.next_pos.zero_()
        self.slot.zero_()
        self.seen = self.max_pos = 0
        for s in self.layers:
            if isinstance(s, KVState):
                s.length = 0

    def reorder(self, index: torch.Tensor) -> "HybridCache":
        """Row i becomes row index[i] in every layer state, the mask and the positions (in place,
        same tensors)."""
        for s in self.layers:
            for t in ((s.k, s.v) if isinstance(s, KVState) else (s.conv, s.ssm)):
                t.copy_(t.index_select(0, index.to(t.device)))
        self.mask.copy_(self.mask.index_select(0, index.to(self.mask.device)))
        self.next_pos.copy_(self.next_pos.index_select(0, index.to(self.next_pos.device)))
        return self
