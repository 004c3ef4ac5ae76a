"""Pure-PyTorch SSD (the Mamba-2 scan): sequential ground truth, chunked form, one-token step.

Per batch b and head h, with values x_t (p,), step dt_t > 0 (0 = pad: state untouched),
decay A < 0, key B_t (n,), query C_t (n,) and state S (p, n); no D term:

    S_t = exp(dt_t * A) * S_{t-1} + dt_t * x_t ⊗ B_t
    y_t = S_t C_t

Shapes (mamba conventions, ngroups == nheads): x (b, l, h, p), dt (b, l, h), A (h,),
B and C (b, l, h, n), state (b, h, p, n). Everything is computed in fp32 (fp64 if an input
is fp64); y comes back in x's dtype, states in the compute dtype.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _compute_dtype(*tensors: Tensor | None) -> torch.dtype:
    """fp64 if any input is fp64, else fp32 (bf16/fp16 inputs are upcast)."""
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) \
        else torch.float32


def ssd_step(state: Tensor, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor,
             inplace: bool = False) -> tuple[Tensor, Tensor]:
    """One token: state (b, h, p, n), x (b, h, p), dt (b, h), B, C (b, h, n).

    Returns y (b, h, p) in x's dtype and the new state (``state`` itself when ``inplace``).
    """
    ct = state.dtype
    dt = dt.to(ct)
    decay = torch.exp(dt * A.to(ct))[..., None, None]  # (b, h, 1, 1)
    dBx = (dt[..., None] * x.to(ct))[..., :, None] * B.to(ct)[..., None, :]  # (b, h, p, n)
    new_state = state.mul_(decay).add_(dBx) if inplace else state * decay + dBx
    y = torch.matmul(new_state, C.to(ct)[..., None]).squeeze(-1)  # (b, h, p, 1) -> (b, h, p)
    return y.to(x.dtype), new_state


def ssd_naive(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor,
              initial_state: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Sequential scan, one ``ssd_step`` per token: the ground truth. Returns (y, final_state)."""
    b, l, h, p = x.shape
    ct = _compute_dtype(x, dt, A, B, C, initial_state)
    if initial_state is None:
        state = x.new_zeros(b, h, p, B.shape[-1], dtype=ct)
    else:
        state = initial_state.to(ct)
    ys = []
    for t in range(l):
        y_t, state = ssd_step(state, x[:, t], dt[:, t], A, B[:, t], C[:, t])
        ys.append(y_t)
    y = torch.stack(ys, dim=1) if ys else x.new_zeros(b, 0, h, p)  # (b, l, h, p)
    return y, state


def _to_chunks(t: Tensor, pad: int, chunk_size: int) -> Tensor:
    """(b, l, h, d) -> (b, h, c, Q, d), zero-padded at the end of time, contiguous."""
    b, _, h, d = t.shape
    t = F.pad(t.permute(0, 2, 1, 3), (0, 0, 0, pad))  # (b, h, l + pad, d)
    return t.contiguous().view(b, h, -1, chunk_size, d)  # (b, h, c, Q, d)


class _StatePassing(torch.autograd.Function):
    """Inter-chunk recurrence S_0 = S0, S_{k+1} = g_k * S_k + s_k, as one loop without a graph.

    s (b, h, c, p, n) chunk states, g (b, h, c) chunk decays, S0 (b, h, p, n)
    -> S (b, h, c + 1, p, n): the state entering every chunk, then the final state.
    """

    @staticmethod
    def forward(ctx, s: Tensor, g: Tensor, S0: Tensor) -> Tensor:
        c = s.shape[2]
        S = s.new_empty(s.shape[:2] + (c + 1,) + s.shape[3:])  # (b, h, c+1, p, n)
        S[:, :, 0] = S0
        gk = g[..., None, None]  # (b, h, c, 1, 1)
        for k in range(c):
            torch.addcmul(s[:, :, k], gk[:, :, k], S[:, :, k], out=S[:, :, k + 1])
        ctx.save_for_backward(g, S)
        return S

    @staticmethod
    def backward(ctx, dS: Tensor):
        g, S = ctx.saved_tensors
        c = g.shape[2]
        dS = dS.clone()  # becomes the total gradient of each S_k, accumulated backwards in time
        gk = g[..., None, None]  # (b, h, c, 1, 1)
        for k in range(c - 1, -1, -1):
            dS[:, :, k].addcmul_(gk[:, :, k], dS[:, :, k + 1])
        ds = dS[:, :, 1:]  # (b, h, c, p, n)
        dg = (ds * S[:, :, :-1]).sum(dim=(-2, -1))  # (b, h, c)
        return ds, dg, dS[:, :, 0]


def ssd_chunked(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk_size: int = 64,
                initial_state: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Chunked SSD: quadratic inside chunks of ``chunk_size`` tokens, recurrent across them.

    Any length (the tail is padded with dt = 0), any device, differentiable in every input.
    Returns y (b, l, h, p) in x's dtype and the final state (b, h, p, n).
    """
    b, l, h, p = x.shape
    n, Q = B.shape[-1], chunk_size
    ct = _compute_dtype(x, dt, A, B, C, initial_state)
    pad = (-l) % Q
    dt = dt.to(ct)
    # 1. head-major chunks; values pre-scaled by dt, per-step log-decay a = dt * A
    xdt = _to_chunks(x.to(ct) * dt[..., None], pad, Q)  # (b, h, c, Q, p)
    Bc = _to_chunks(B.to(ct), pad, Q)  # (b, h, c, Q, n)
    Cc = _to_chunks(C.to(ct), pad, Q)  # (b, h, c, Q, n)
    a = _to_chunks((dt * A.to(ct))[..., None], pad, Q).squeeze(-1)  # (b, h, c, Q)
    a_cum = torch.cumsum(a, dim=-1)  # (b, h, c, Q)
    # 2. diagonal blocks: y_l += sum_{s<=l} (C_l . B_s) exp(a_cum_l - a_cum_s) dt_s x_s
    seg = a_cum[..., :, None] - a_cum[..., None, :]  # (b, h, c, Q, Q)
    causal = torch.ones(Q, Q, dtype=torch.bool, device=x.device).tril()
    decay = torch.exp(seg.masked_fill(~causal, -torch.inf))  # (b, h, c, Q, Q), 0 above diagonal
    y = torch.matmul(torch.matmul(Cc, Bc.transpose(-1, -2)) * decay, xdt)  # (b, h, c, Q, p)
    # 3. state each chunk leaves behind from its own tokens: sum_s exp(a_cum_Q - a_cum_s) dt_s x_s B_s^T
    to_end = torch.exp(a_cum[..., -1:] - a_cum)  # (b, h, c, Q)
    s = torch.matmul(xdt.transpose(-1, -2), Bc * to_end[..., None])  # (b, h, c, p, n)
    # 4. pass states across chunks
    S0 = initial_state.to(ct) if initial_state is not None else s.new_zeros(b, h, p, n)
    S = _StatePassing.apply(s, torch.exp(a_cum[..., -1]), S0)  # (b, h, c + 1, p, n)
    # 5. off-diagonal blocks: y_l += exp(a_cum_l) S_in C_l
    C_decayed = Cc * torch.exp(a_cum)[..., None]  # (b, h, c, Q, n)
    y += torch.matmul(C_decayed, S[:, :, :-1].transpose(-1, -2))  # (b, h, c, Q, p)
    y = y.view(b, h, -1, p)[:, :, :l].permute(0, 2, 1, 3)  # (b, h, c*Q, p) -> (b, l, h, p)
    return y.to(dtype=x.dtype, memory_format=torch.contiguous_format), S[:, :, -1].clone()
