"""Grouped-query softmax attention with RoPE and a KV cache (the teacher's mixer)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .cache import KVState
from .config import LayerShape
from .layers import FusedRows, apply_rope, refresh_fused


ATTENTION_IMPLS = ("sdpa", "eager")


class Attention(nn.Module):
    impl = "sdpa"  # sdpa | eager (grouped KV materialised, fp32 softmax: the paper's teacher)

    def __init__(self, hidden: int, shape: LayerShape):
        super().__init__()
        self.shape = shape
        h, hkv, d, bias = shape.num_heads, shape.num_kv_heads, shape.head_dim, shape.attention_bias
        self.q_proj = nn.Linear(hidden, h * d, bias=bias)
        self.k_proj = nn.Linear(hidden, hkv * d, bias=bias)
        self.v_proj = nn.Linear(hidden, hkv * d, bias=bias)
        self.o_proj = nn.Linear(h * d, hidden, bias=shape.out_bias)
        self.fused: FusedRows | None = None  # [q; k; v] for decoding (``fuse``)

    def in_projections(self) -> list[nn.Linear]:
        return [self.q_proj, self.k_proj, self.v_proj]

    def fuse(self, on: bool = True) -> None:
        """Read q, k and v as one matrix in ``step`` (``on=False`` undoes it)."""
        self.fused = refresh_fused(self.fused, self.in_projections()) if on else None

    def core(self, u, cos, sin, key_mask=None, state: KVState | None = None, seq_idx=None) -> torch.Tensor:
        """Per-head attention output before o_proj: (b, l, h*d).

        key_mask (b, kv_len) bool marks real keys (None: all real). seq_idx (b, l) numbers packed
        sequences: a query sees only keys of its own sequence (block-diagonal causal mask).
        """
        b, l, _ = u.shape
        s = self.shape
        q = self.q_proj(u).view(b, l, s.num_heads, s.head_dim)
        k = self.k_proj(u).view(b, l, s.num_kv_heads, s.head_dim)
        v = self.v_proj(u).view(b, l, s.num_kv_heads, s.head_dim)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (b, heads, l, d)
        if state is not None:
            k, v = state.append(k, v)  # (b, hkv, kv_len, d)
        y = attend(q, k, v, key_mask, s.groups, self.impl, seq_idx)  # (b, h, l, d)
        return y.transpose(1, 2).reshape(b, l, s.num_heads * s.head_dim)

    def step(self, u, cos, sin, state: KVState, slot: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """One token: u (b, C) normed input, cos/sin (b, 1, d), the cache slot (1,) it goes to and the
        key mask (b, kv_len) over the slots to read (the new one included) -> (b, h*d).

        Static shapes, no host synchronisation: keys and values go in with ``index_copy_``.
        """
        b, s = u.shape[0], self.shape
        q, k, v = self.fused(u) if self.fused is not None else (self.q_proj(u), self.k_proj(u), self.v_proj(u))
        q = apply_rope(q.view(b, 1, s.num_heads, s.head_dim), cos, sin).transpose(1, 2)  # (b, h, 1, d)
        k = apply_rope(k.view(b, 1, s.num_kv_heads, s.head_dim), cos, sin).transpose(1, 2)  # (b, hkv, 1, d)
        state.write_at(slot, k, v.view(b, 1, s.num_kv_heads, s.head_dim).transpose(1, 2))
        n = key_mask.shape[1]
        y = attend_masked(q, state.k[:, :, :n], state.v[:, :, :n], key_mask[:, None, None, :], s.groups, self.impl)
        return y.reshape(b, s.num_heads * s.head_dim)


def _mask(q_len: int, kv_len: int, key_mask, device, seq_idx=None) -> torch.Tensor | None:
    """Boolean (b|1, 1, q_len, kv_len) mask, True = attend; queries are the last q_len positions."""
    causal = None
    if q_len > 1:
        qi = torch.arange(kv_len - q_len, kv_len, device=device)[:, None]
        causal = (torch.arange(kv_len, device=device)[None, :] <= qi)[None, None]  # (1, 1, q, kv)
    if seq_idx is not None:  # packed: block-diagonal (q_len == kv_len, no cache)
        same = seq_idx[:, None, :, None] == seq_idx[:, None, None, :]  # (b, 1, q, kv)
        causal = same if causal is None else causal & same
    if key_mask is None:
        return causal
    km = key_mask[:, None, None, :]  # (b, 1, 1, kv)
    m = km if causal is None else (km & causal)
    # a fully masked row (a pad query) would give NaN: let it see itself
    eye = torch.zeros_like(m)
    eye[..., torch.arange(q_len), torch.arange(kv_len - q_len, kv_len)] = True
    return m | eye


def attend(q, k, v, key_mask, groups: int, impl: str = "sdpa", seq_idx=None) -> torch.Tensor:
    """q (b, h, lq, d); k, v (b, hkv, lk, d) -> (b, h, lq, d); queries are the last lq keys."""
    lq, lk = q.shape[2], k.shape[2]
    if seq_idx is not None and lq != lk:
        raise ValueError("seq_idx (packed sequences) needs a full forward, not a cached one")
    if impl != "eager" and key_mask is None and lq == lk and seq_idx is None:
        return _sdpa(q, k, v, None, groups, causal=True)
    return attend_masked(q, k, v, _mask(lq, lk, key_mask, q.device, seq_idx), groups, impl)


def attend_masked(q, k, v, mask, groups: int, impl: str = "sdpa") -> torch.Tensor:
    """Attention under a boolean mask (b|1, 1, lq, lk) (True = attend; None: everything)."""
    if impl == "eager":  # the paper's teacher: KV repeated per query head, fp32 scores
        k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
        scores = (q @ k.transpose(-1, -2)).float() / math.sqrt(q.shape[-1])  # (b, h, lq, lk)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return scores.softmax(-1).to(v.dtype) @ v
    return _sdpa(q, k, v, mask, groups, causal=False)


def _sdpa(q, k, v, mask, groups, causal):
    if groups > 1:
        try:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=True)
        except TypeError:  # torch < 2.5
            k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)


def set_attention_impl(model: nn.Module, impl: str) -> None:
    """sdpa | eager on every attention mixer of ``model`` (a runtime choice, never saved)."""
    if impl not in ATTENTION_IMPLS:
        raise ValueError(f"unknown attention implementation {impl!r}; choose one of: {', '.join(ATTENTION_IMPLS)}")
    for m in model.modules():
        if isinstance(m, Attention):
            m.impl = impl
