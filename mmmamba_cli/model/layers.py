"""Building blocks shared by every layer type: RMSNorm, rotary embedding, SwiGLU MLP, and the
row-fused projection weights a decode step reads."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import LayerShape


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class FusedRows:
    """A row-stacked copy of several ``nn.Linear`` weights (and biases) read as one matrix.

    A batch-1 decode step multiplies one token by every matrix, so it is bound by the number of
    kernels and the bytes read; one product instead of several does the same arithmetic. The copy
    is not a parameter (state dicts, optimisers and training never see it); ``current`` tells
    whether the sources still hold what was copied (same storage, no in-place update since).
    """

    def __init__(self, linears: list[nn.Linear]):
        with torch.no_grad():
            self.weight = torch.cat([m.weight.detach() for m in linears], 0)
            self.bias = None if all(m.bias is None for m in linears) else torch.cat(
                [m.bias.detach() if m.bias is not None else m.weight.new_zeros(m.weight.shape[0]) for m in linears])
        self.sizes = [m.weight.shape[0] for m in linears]
        self._stamp = self.stamp(linears)

    @staticmethod
    def stamp(linears: list[nn.Linear]) -> list[tuple[int, int]]:
        return [(t.data_ptr(), _version(t)) for m in linears for t in (m.weight, m.bias) if t is not None]

    def current(self, linears: list[nn.Linear]) -> bool:
        return self.stamp(linears) == self._stamp

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x (..., in) -> the outputs of the fused linears, in order."""
        return list(F.linear(x, self.weight, self.bias).split(self.sizes, dim=-1))


def _version(t: torch.Tensor) -> int:
    """In-place updates so far (inference-mode tensors keep no count: storage identity only)."""
    return -1 if t.is_inference() else t._version


def refresh_fused(fused: FusedRows | None, linears: list[nn.Linear]) -> FusedRows:
    """``fused`` when still current, else a new copy."""
    return fused if fused is not None and fused.current(linears) else FusedRows(linears)


class SwiGLU(nn.Module):
    """InternLM2 / Llama MLP: w2(silu(w1 x) * w3 x)."""

    def __init__(self, hidden: int, intermediate: int):
        super().__init__()
        self.w1 = nn.Linear(hidden, intermediate, bias=False)  # gate
        self.w3 = nn.Linear(hidden, intermediate, bias=False)  # up
        self.w2 = nn.Linear(intermediate, hidden, bias=False)  # down
        self.fused: FusedRows | None = None  # [w1; w3] for decoding (``fuse``)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """The same for a decode step, through the fused [w1; w3] when there is one."""
        if self.fused is None:
            return self(x)
        gate, up = self.fused(x)
        return self.w2(F.silu(gate) * up)

    def fuse(self, on: bool = True) -> None:
        self.fused = refresh_fused(self.fused, [self.w1, self.w3]) if on else None


def rope_inv_freq(shape: LayerShape, seq_len: int, device=None) -> tuple[torch.Tensor, float]:
    """Inverse frequencies (d/2,) and the position scale for plain, linear or dynamic-NTK RoPE."""
    dim, base, scale = shape.head_dim, float(shape.rope_theta), 1.0
    scaling = shape.rope_scaling or {}
    kind = scaling.get("type", scaling.get("rope_type"))
    factor = float(scaling.get("factor", 1.0))
    if kind == "linear":
        scale = 1.0 / factor
    elif kind == "dynamic" and seq_len > shape.max_position_embeddings:
        ratio = factor * seq_len / shape.max_position_embeddings - (factor - 1)
        base = base * ratio ** (dim / (dim - 2))
    elif kind not in (None, "default", "linear", "dynamic", "llama3"):
        raise ValueError(f"unsupported rope_scaling type {kind!r} (supported: linear, dynamic, llama3)")
    inv = 1.0 / (base ** (torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim))
    if kind == "llama3":
        inv = llama3_inv_freq(inv, scaling, shape.max_position_embeddings)
    return inv, scale


def llama3_inv_freq(inv: torch.Tensor, scaling: dict, max_positions: int) -> torch.Tensor:
    """Llama 3.1 frequency-dependent scaling: long wavelengths / factor, short ones kept, a smooth ramp between."""
    factor, low, high = float(scaling["factor"]), float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
    old_len = float(scaling.get("original_max_position_embeddings", max_positions))
    wavelen = 2 * math.pi / inv  # (d/2,)
    smooth = ((old_len / wavelen - low) / (high - low)).clamp(0.0, 1.0)  # 0: long wavelengths, 1: short
    return (1 - smooth) * inv / factor + smooth * inv


def rope_cos_sin(shape: LayerShape, positions: torch.Tensor, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of shape (b, l, d) for integer positions (b, l)."""
    inv, scale = rope_inv_freq(shape, seq_len, positions.device)
    freqs = positions.float()[..., None] * scale * inv  # (b, l, d/2)
    emb = torch.cat([freqs, freqs], dim=-1)  # (b, l, d)
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (b, l, h, d); cos/sin (b, l, d). Rotate-half convention."""
    half = x.shape[-1] // 2
    rot = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    cos, sin = cos[:, :, None].to(x.dtype), sin[:, :, None].to(x.dtype)
    return x * cos + rot * sin
