"""The Mamba-2 mixer carved out of an attention layer (SPEC section 2).

Roles: C <- W_Q, B <- W_K, x <- W_V, out_proj <- W_O; new: a depthwise causal conv over
[x, B, C], dt_proj, dt_bias, A_log, a gate z_proj and a per-head RMSNorm.
ngroups = nheads, headdim = d_state = head_dim; B and x are shared by the G query heads
of their KV head exactly as K and V were.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.kernels import ssd_scan, ssd_update
from .cache import SSMState
from .config import LayerShape, MambaSettings
from .layers import FusedRows, RMSNorm, refresh_fused


class Mamba2(nn.Module):
    def __init__(self, hidden: int, shape: LayerShape, settings: MambaSettings):
        super().__init__()
        self.shape, self.settings = shape, settings
        h, hkv, d, bias = shape.num_heads, shape.num_kv_heads, shape.head_dim, shape.attention_bias
        self.C_proj = nn.Linear(hidden, h * d, bias=bias)
        self.B_proj = nn.Linear(hidden, hkv * d, bias=bias)
        self.x_proj = nn.Linear(hidden, hkv * d, bias=bias)
        self.out_proj = nn.Linear(h * d, hidden, bias=shape.out_bias)
        self.channels = 2 * hkv * d + h * d  # [x, B, C]
        self.conv1d = nn.Conv1d(self.channels, self.channels, settings.d_conv, groups=self.channels,
                                padding=settings.d_conv - 1, bias=True)
        self.dt_proj = nn.Linear(hidden, h, bias=False)
        self.dt_bias = nn.Parameter(torch.zeros(h))
        self.A_log = nn.Parameter(torch.zeros(h))
        self.z_proj = nn.Linear(hidden, h * d, bias=False)
        self.norm = RMSNorm(d, eps=settings.norm_eps)
        self.fused: FusedRows | None = None  # [x; B; C; z; dt] for decoding (``fuse``)
        self.reset_new_parameters()

    def in_projections(self) -> list[nn.Linear]:
        return [self.x_proj, self.B_proj, self.C_proj, self.z_proj, self.dt_proj]

    def fuse(self, on: bool = True) -> None:
        """Read the five input projections as one matrix in ``step`` (``on=False`` undoes it)."""
        self.fused = refresh_fused(self.fused, self.in_projections()) if on else None

    @torch.no_grad()
    def reset_new_parameters(self, generator: torch.Generator | None = None) -> None:
        """Init of the parameters attention does not have (SPEC section 2 table)."""
        s = self.settings
        self.conv1d.weight.zero_()
        self.conv1d.weight[:, 0, -1] = 1.0  # identity: the tap on the current token
        self.conv1d.bias.zero_()
        self.dt_proj.weight.zero_()
        u = torch.rand(self.shape.num_heads, generator=generator)
        dt = torch.exp(u * (math.log(s.dt_max) - math.log(s.dt_min)) + math.log(s.dt_min))
        dt = dt.clamp(min=s.dt_init_floor)
        self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        self.A_log.fill_(s.A_init)
        w = torch.empty_like(self.z_proj.weight)
        nn.init.xavier_uniform_(w, gain=s.gate_gain, generator=generator) if generator is not None \
            else nn.init.xavier_uniform_(w, gain=s.gate_gain)
        self.z_proj.weight.copy_(w)
        self.norm.weight.fill_(1.0)

    def core(self, u: torch.Tensor, valid: torch.Tensor | None = None,
             state: SSMState | None = None, seq_idx: torch.Tensor | None = None) -> torch.Tensor:
        """Per-head output after the gate, before out_proj: (b, l, h*d).

        valid (b, l) bool marks real tokens: pads get zero conv input and dt = 0, so they
        never touch the conv or SSM state. With ``state`` the final states are written back.
        seq_idx (b, l) numbers packed sequences: neither the conv nor the SSM state crosses
        from one to the next (no ``state`` then).
        """
        b, l, _ = u.shape
        h, hkv, d = self.shape.num_heads, self.shape.num_kv_heads, self.shape.head_dim
        # 1. projections: x <- V, B <- K, C <- Q (no RoPE, no 1/sqrt(d))
        xBC = torch.cat([self.x_proj(u), self.B_proj(u), self.C_proj(u)], dim=-1)  # (b, l, ch)
        if valid is not None:
            xBC = xBC * valid[..., None].to(xBC.dtype)
        # 2. causal depthwise conv + SiLU
        xBC = F.silu(self._conv(xBC, state) if seq_idx is None else self._conv_packed(xBC, seq_idx))
        x, B, C = torch.split(xBC, [hkv * d, hkv * d, h * d], dim=-1)
        # 3. share each KV head's x and B with its G query heads
        g = h // hkv
        x = x.view(b, l, hkv, 1, d).expand(b, l, hkv, g, d).reshape(b, l, h, d)
        B = B.view(b, l, hkv, 1, d).expand(b, l, hkv, g, d).reshape(b, l, h, d)
        C = C.view(b, l, h, d)
        # 4. selective scan
        dt = F.softplus(self.dt_proj(u).float() + self.dt_bias.float())  # (b, l, h)
        if valid is not None:
            dt = dt * valid[..., None]
        A = -torch.exp(self.A_log.float())  # (h,)
        impl = self.settings.impl
        init = state.ssm if state is not None else None
        y, final = ssd_scan(x, dt, A, B, C, self.settings.chunk_size, initial_state=init, impl=impl,
                            seq_idx=seq_idx)
        if state is not None:
            state.ssm.copy_(final)
        # 5. per-head norm, SiLU gate
        y = self.norm(y.to(u.dtype)) * F.silu(self.z_proj(u)).view(b, l, h, d)
        return y.reshape(b, l, h * d)

    def _conv(self, xBC: torch.Tensor, state: SSMState | None) -> torch.Tensor:
        """Causal depthwise conv along time; (b, l, ch) -> (b, l, ch); updates state.conv."""
        k = self.settings.d_conv
        xt = xBC.transpose(1, 2)  # (b, ch, l)
        if state is not None:
            xt = torch.cat([state.conv.to(xt.dtype), xt], dim=-1)  # (b, ch, k-1+l)
            state.conv.copy_(xt[:, :, -(k - 1):])
            out = F.conv1d(xt, self.conv1d.weight, self.conv1d.bias, groups=self.channels)
        else:
            out = self.conv1d(xt)[..., : xt.shape[-1]]
        return out.transpose(1, 2)

    def _conv_packed(self, xBC: torch.Tensor, seq_idx: torch.Tensor) -> torch.Tensor:
        """The causal conv with taps that would reach into the previous sequence dropped.

        out_t = bias + sum_j w_j x_{t-j} [seq_idx_{t-j} == seq_idx_t], j = 0 .. d_conv-1.
        """
        w = self.conv1d.weight[:, 0]  # (ch, k); tap k-1 is the current token
        k, l = w.shape[1], xBC.shape[1]
        out = xBC * w[:, -1] + self.conv1d.bias
        for j in range(1, min(k, l)):
            same = (seq_idx[:, j:] == seq_idx[:, :-j])[..., None].to(xBC.dtype)  # (b, l-j, 1)
            out = out + F.pad(xBC[:, :-j] * w[:, k - 1 - j] * same, (0, 0, j, 0))  # shifted j steps later
        return out

    def step(self, u: torch.Tensor, state: SSMState) -> torch.Tensor:
        """One token: u (b, C) normed input -> per-head output after the gate (b, h*d).

        The recurrence of ``core`` for l = 1, updating ``state`` in place with static shapes and no
        host synchronisation (so it can be captured in a CUDA graph).
        """
        b = u.shape[0]
        h, hkv, d = self.shape.num_heads, self.shape.num_kv_heads, self.shape.head_dim
        # 1. projections x <- V, B <- K, C <- Q, gate z, dt (one matrix once fused)
        if self.fused is not None:
            x, B, C, z, dt = self.fused(u)
            xBC = torch.cat([x, B, C], dim=-1)
        else:
            xBC = torch.cat([self.x_proj(u), self.B_proj(u), self.C_proj(u)], dim=-1)  # (b, ch)
            z, dt = self.z_proj(u), self.dt_proj(u)
        # 2. causal depthwise conv over the last d_conv inputs, then SiLU
        window = torch.cat([state.conv, xBC[..., None].to(state.conv.dtype)], dim=-1)  # (b, ch, k)
        state.conv.copy_(window[..., 1:])
        xBC = F.silu((window * self.conv1d.weight[:, 0]).sum(-1) + self.conv1d.bias).to(u.dtype)
        x, B, C = torch.split(xBC, [hkv * d, hkv * d, h * d], dim=-1)
        # 3. each KV head's x and B serve its G query heads
        g = h // hkv
        x = x.view(b, hkv, 1, d).expand(b, hkv, g, d).reshape(b, h, d)
        B = B.view(b, hkv, 1, d).expand(b, hkv, g, d).reshape(b, h, d)
        # 4. S = exp(dt A) S + dt x B^T ; y = S C
        dt = F.softplus(dt.float() + self.dt_bias.float())  # (b, h)
        A = -torch.exp(self.A_log.float())
        y = ssd_update(state.ssm, x, dt, A, B, C.view(b, h, d), impl=self.settings.impl)  # (b, h, d)
        # 5. per-head norm, SiLU gate
        y = self.norm(y.to(u.dtype)) * F.silu(z).view(b, h, d)
        return y.reshape(b, h * d)
