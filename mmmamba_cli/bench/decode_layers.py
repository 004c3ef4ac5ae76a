"""One-token decode steps as plain functions of tensors (no modules, no Python-side state).

They read fused weights (see ``fuse.py``) and update preallocated states in place, so a whole
decode step has static shapes and no host synchronisation: it can be captured as a CUDA graph,
and each function can be compiled once and reused by every layer of its kind (the compiler
guards on shapes and dtypes, not on which layer's tensors come in).
Numerics follow the model's own modules (``model/layers.py``, ``model/mamba2.py``,
``model/attention.py``); ``tests/test_bench.py`` checks the steps against ``MMModel.forward``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..model.layers import apply_rope
from ..ops.kernels import ssd_update


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """RMSNorm exactly as ``model.layers.RMSNorm``: fp32 statistics, weight applied in x's dtype."""
    xf = x.float()
    return weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def mlp_block(h: Tensor, norm_w: Tensor, eps: float, w13: Tensor, w2: Tensor) -> Tensor:
    """h + w2(silu(w1 u) * w3 u), u = ffn_norm(h); w13 = [w1; w3] stacked by rows."""
    a, g = F.linear(rms_norm(h, norm_w, eps), w13).chunk(2, dim=-1)
    return h + F.linear(F.silu(a) * g, w2)


def mamba_mixer(h: Tensor, p: dict[str, Tensor], dims: tuple[int, int, int], eps: float,
                head_eps: float, conv_state: Tensor, ssm_state: Tensor, impl: str) -> Tensor:
    """h (b, 1, c) -> h + out_proj(y) for one token; updates conv_state and ssm_state in place.

    p: norm, w_in = [x; B; C; z; dt] rows (bias b_in or None), conv_w (ch, k), conv_b, dt_bias,
    A (h,) fp32, head_norm, w_out (bias b_out or None). dims = (nheads, nkv, headdim).
    """
    H, hkv, d = dims
    b = h.shape[0]
    u = rms_norm(h[:, 0], p["norm"], eps)  # (b, c)
    # 1. projections x <- V, B <- K, C <- Q, gate z, dt: one fused matrix
    xBC, z, dt = F.linear(u, p["w_in"], p.get("b_in")).split([2 * hkv * d + H * d, H * d, H], dim=-1)
    # 2. causal depthwise conv over the last k inputs, then SiLU
    window = torch.cat([conv_state, xBC[..., None]], dim=-1)  # (b, ch, k)
    conv_state.copy_(window[..., 1:])
    xBC = F.silu((window * p["conv_w"]).sum(-1) + p["conv_b"])  # (b, ch)
    x, B, C = xBC.split([hkv * d, hkv * d, H * d], dim=-1)
    # 3. each KV head's x and B serve its G query heads
    g = H // hkv
    x = x.view(b, hkv, 1, d).expand(b, hkv, g, d).reshape(b, H, d)
    B = B.view(b, hkv, 1, d).expand(b, hkv, g, d).reshape(b, H, d)
    # 4. S = exp(dt A) S + dt x B^T ; y = S C
    dt = F.softplus(dt.float() + p["dt_bias"])  # (b, H)
    y = ssd_update(ssm_state, x, dt, p["A"], B, C.view(b, H, d), impl=impl)  # (b, H, d)
    # 5. per-head RMSNorm, SiLU gate, output projection
    y = rms_norm(y.to(h.dtype), p["head_norm"], head_eps) * F.silu(z).view(b, H, d)
    return h + F.linear(y.reshape(b, 1, H * d), p["w_out"], p.get("b_out"))


def attention_qkv(h: Tensor, p: dict[str, Tensor], dims: tuple[int, int, int], eps: float,
                  cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """h (b, 1, c) -> q (b, hkv, G, d) grouped by KV head, k and v (b, hkv, 1, d), RoPE applied."""
    H, hkv, d = dims
    b = h.shape[0]
    q, k, v = F.linear(rms_norm(h, p["norm"], eps), p["w_qkv"], p.get("b_qkv")).split(
        [H * d, hkv * d, hkv * d], dim=-1)
    q = apply_rope(q.view(b, 1, H, d), cos, sin)  # (b, 1, H, d)
    k = apply_rope(k.view(b, 1, hkv, d), cos, sin)
    # query head kv*G + g reads KV head kv (SPEC section 1): consecutive heads form a group
    return q.view(b, hkv, H // hkv, d), k.transpose(1, 2), v.view(b, 1, hkv, d).transpose(1, 2)


def grouped_attention(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor, splits: int = 1) -> Tensor:
    """Softmax attention of G grouped queries per KV head over a fixed-capacity cache.

    q (b, hkv, G, d); k, v (b, hkv, T, d); key_mask (b, T) True = attend -> (b, hkv, G, d).
    Each cached key and value is read once (no repeat over the group). With ``splits`` = 1 this
    is one fused SDPA call; ``splits`` > 1 (a GPU at long context, T % splits == 0) computes the
    scores with one batched product and cuts the value product into that many blocks of keys,
    which keeps the whole GPU busy where a fused kernel would run one block per head.
    """
    if splits <= 1:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :])
    b, hkv, G, d = q.shape
    T = k.shape[2]
    s = torch.matmul(q, k.transpose(-1, -2)).float() * (1.0 / math.sqrt(d))  # (b, hkv, G, T)
    s = s.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    p = s.softmax(-1).to(v.dtype)
    n = T // splits
    p = p.view(b, hkv, G, splits, n).transpose(2, 3)  # (b, hkv, S, G, n)
    part = torch.matmul(p, v.view(b, hkv, splits, n, d))  # (b, hkv, S, G, d)
    return part.sum(2, dtype=torch.float32).to(v.dtype)


def eager_attention(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor, splits: int = 1) -> Tensor:
    """The paper's teacher: KV repeated to every query head, fp32 scores and softmax.

    Same signature and result as ``grouped_attention`` (``splits`` is ignored)."""
    b, hkv, G, d = q.shape
    k, v = k.repeat_interleave(G, 1), v.repeat_interleave(G, 1)  # (b, H, T, d) materialised
    s = (q.reshape(b, hkv * G, 1, d) @ k.transpose(-1, -2)).float() / math.sqrt(d)  # (b, H, 1, T)
    s = s.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    return (s.softmax(-1).to(v.dtype) @ v).view(b, hkv, G, d)


def attention_out(h: Tensor, y: Tensor, w_o: Tensor, b_o: Tensor | None) -> Tensor:
    """Residual add of the output projection; y (b, hkv, G, d) -> h (b, 1, c)."""
    b = h.shape[0]
    return h + F.linear(y.reshape(b, 1, -1), w_o, b_o)
