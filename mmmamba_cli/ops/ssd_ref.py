"""Pure-PyTorch SSD (the Mamba-2 scan): sequential ground truth, chunked form, one-token step.

Per batch b and head h, with values x_t (p,), step dt_t > 0 (0 = pad: state untouched),
decay A < 0, key B_t (n,), query C_t (n,) and state S (p, n); no D term:

    S_t = exp(dt_t * A) * S_{t-1} + dt_t * x_t ⊗ B_t
    y_t = S_t C_t

Shapes (mamba conventions, ngroups == nheads): x (b, l, h, p), dt (b, l, h), A (h,),
B and C (b, l, h, n), state (b, h, p, n). Everything is computed in fp32 (fp64 if an input
is fp64); y comes back in x's dtype, states in the compute dtype.

Packed rows: ``seq_idx`` (b, l), non-decreasing along time, numbers the sequences of a row; the
state is reset where it changes (the decay into a new sequence is zero), as mamba-ssm's
``seq_idx`` does. An initial state belongs to the row's first sequence.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


_SEGMENT_ELEMS = 2**20  # CPU: elements per large temporary of the chunked scan (4 MiB in fp32)


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
              initial_state: Tensor | None = None, seq_idx: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Sequential scan, one state update per token: the ground truth. Returns (y, final_state)."""
    b, l, h, p = x.shape
    ct = _compute_dtype(x, dt, A, B, C, initial_state)
    if initial_state is None:
        S = x.new_zeros(b, h, p, B.shape[-1], dtype=ct)
    else:
        S = initial_state.to(ct)
    if l == 0:
        return x.new_zeros(b, 0, h, p), S
    dt = dt.to(ct)
    decay = torch.exp(dt * A.to(ct))[..., None, None]  # (b, l, h, 1, 1)
    if seq_idx is not None:  # no carry-over into a new sequence
        same = torch.ones_like(seq_idx, dtype=torch.bool)
        same[:, 1:] = seq_idx[:, 1:] == seq_idx[:, :-1]
        decay = decay * same[:, :, None, None, None]
    dBx = (dt[..., None] * x.to(ct))[..., :, None] * B.to(ct)[..., None, :]  # (b, l, h, p, n)
    states = []
    for decay_t, dBx_t in zip(decay.unbind(1), dBx.unbind(1)):  # unbind: one backward for all t
        S = decay_t * S + dBx_t  # (b, h, p, n)
        states.append(S)
    y = torch.einsum("blhpn,blhn->blhp", torch.stack(states, dim=1), C.to(ct))  # (b, l, h, p)
    return y.to(x.dtype), S


def _to_chunks(t: Tensor, pad: int, chunk_size: int) -> Tensor:
    """(b, l, h, d) -> (b, h, c, Q, d), zero-padded at the end of time, contiguous (one copy)."""
    b, _, h, d = t.shape
    t = t.transpose(1, 2)  # (b, h, l, d)
    t = F.pad(t, (0, 0, 0, pad)).contiguous() if pad else t.contiguous()  # (b, h, l + pad, d)
    return t.view(b, h, -1, chunk_size, d)  # (b, h, c, Q, d)


class _StatePassing(torch.autograd.Function):
    """Inter-chunk recurrence S_0 = S0, S_{k+1} = g_k * S_k + s_k, one loop with no graph.

    s (b, h, c, p, n) chunk states, g (b, h, c) chunk decays, S0 (b, h, p, n)
    -> S_in (b, h, c, p, n) the state entering each chunk, S_c (b, h, p, n) the final state.
    """

    @staticmethod
    def forward(ctx, s: Tensor, g: Tensor, S0: Tensor) -> tuple[Tensor, Tensor]:
        c = s.shape[2]
        S_in = torch.empty_like(s, memory_format=torch.contiguous_format)  # (b, h, c, p, n)
        S_in[:, :, 0] = S0
        gk = g[..., None, None]  # (b, h, c, 1, 1)
        for k in range(c - 1):
            torch.addcmul(s[:, :, k], gk[:, :, k], S_in[:, :, k], out=S_in[:, :, k + 1])
        S_c = torch.addcmul(s[:, :, -1], gk[:, :, -1], S_in[:, :, -1])
        ctx.save_for_backward(g, S_in)
        return S_in, S_c

    @staticmethod
    def backward(ctx, dS_in: Tensor, dS_c: Tensor):
        g, S_in = ctx.saved_tensors
        c = g.shape[2]
        gk = g[..., None, None]  # (b, h, c, 1, 1)
        # ds_k = total gradient of S_{k+1}, accumulated backwards in time
        ds = torch.empty_like(S_in)  # (b, h, c, p, n)
        ds[:, :, -1] = dS_c
        for k in range(c - 1, 0, -1):
            torch.addcmul(dS_in[:, :, k], gk[:, :, k], ds[:, :, k], out=ds[:, :, k - 1])
        dS0 = torch.addcmul(dS_in[:, :, 0], gk[:, :, 0], ds[:, :, 0])
        dg = (ds * S_in).sum(dim=(-2, -1))  # (b, h, c)
        return ds, dg, dS0


def _segment_tokens(x: Tensor, chunk_size: int, d: int) -> int:
    """Tokens per segment: on CPU about 2^20 elements per (b, h, c, Q, max(Q, d)) temporary.

    Small temporaries are recycled by the allocator instead of being faulted in afresh, which
    made the 32K-token CPU scan about twice as fast here. Elsewhere one segment covers everything.
    """
    if x.device.type != "cpu":
        return x.shape[1]
    b, _, h, _ = x.shape
    return chunk_size * max(1, _SEGMENT_ELEMS // (b * h * chunk_size * max(chunk_size, d)))


def ssd_chunked(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk_size: int = 64,
                initial_state: Tensor | None = None, seq_idx: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Chunked SSD: quadratic inside chunks of ``chunk_size`` tokens, recurrent across them.

    Any length (the tail is padded with dt = 0), any device, differentiable in every input.
    Returns y (b, l, h, p) in x's dtype and the final state (b, h, p, n).
    """
    b, l, h, p = x.shape
    n = B.shape[-1]
    ct = _compute_dtype(x, dt, A, B, C, initial_state)
    state = initial_state.to(ct) if initial_state is not None else x.new_zeros(b, h, p, n, dtype=ct)
    if l == 0:
        return x.new_zeros(b, 0, h, p), state
    seg = _segment_tokens(x, chunk_size, max(p, n))
    ys, prev = [], None if seq_idx is None else seq_idx[:, :1]  # (b, 1): the sequence the state belongs to
    idx = [None] * -(-l // seg) if seq_idx is None else seq_idx.split(seg, dim=1)
    for x_s, dt_s, B_s, C_s, i_s in zip(*(t.split(seg, dim=1) for t in (x, dt, B, C)), idx):
        y_s, state = _ssd_segment(x_s.to(ct), dt_s.to(ct), A.to(ct), B_s.to(ct), C_s.to(ct),
                                  chunk_size, state, None if i_s is None else (prev, i_s))
        prev = None if i_s is None else i_s[:, -1:]
        ys.append(y_s.to(x.dtype))
    return (ys[0] if len(ys) == 1 else torch.cat(ys, dim=1)), state


def _ssd_segment(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk_size: int,
                 S0: Tensor, seqs: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """``ssd_chunked`` on one segment, inputs already in the compute dtype, state S0 given.

    ``seqs``: (sequence of S0 (b, 1), seq_idx of these tokens (b, l)) for packed rows.
    """
    b, l, h, p = x.shape
    Q = chunk_size
    pad = (-l) % Q
    keep = _carry_masks(seqs, pad, Q) if seqs is not None else None
    # 1. head-major chunks; values pre-scaled by dt, per-step log-decay a = dt * A
    xdt = _to_chunks(x * dt[..., None], pad, Q)  # (b, h, c, Q, p)
    Bc = _to_chunks(B, pad, Q)  # (b, h, c, Q, n)
    Cc = _to_chunks(C, pad, Q)  # (b, h, c, Q, n)
    a = _to_chunks((dt * A)[..., None], pad, Q).squeeze(-1)  # (b, h, c, Q)
    a_cum = torch.cumsum(a, dim=-1)  # (b, h, c, Q)
    # 2. diagonal blocks: y_l += sum_{s<=l} (C_l . B_s) exp(a_cum_l - a_cum_s) dt_s x_s
    segsum = a_cum[..., :, None] - a_cum[..., None, :]  # (b, h, c, Q, Q)
    causal = torch.ones(Q, Q, dtype=torch.bool, device=x.device).tril()
    allowed = causal if keep is None else causal & keep["pair"]  # packed: same sequence only
    decay = segsum.masked_fill_(~allowed, -torch.inf).exp_()  # (b, h, c, Q, Q), 0 above the diagonal
    y = torch.matmul(torch.matmul(Cc, Bc.transpose(-1, -2)) * decay, xdt)  # (b, h, c, Q, p)
    # 3. state each chunk leaves behind from its own tokens: sum_s exp(a_cum_Q - a_cum_s) dt_s x_s B_s^T
    to_end = torch.exp(a_cum[..., -1:] - a_cum)  # (b, h, c, Q)
    chunk_decay = torch.exp(a_cum[..., -1])  # (b, h, c)
    from_start = torch.exp(a_cum)  # (b, h, c, Q)
    if keep is not None:  # a token reaches the chunk's end / a state reaches a token only within a sequence
        to_end, chunk_decay = to_end * keep["end"], chunk_decay * keep["through"]
        from_start = from_start * keep["start"]
    s = torch.matmul(xdt.transpose(-1, -2), Bc * to_end[..., None])  # (b, h, c, p, n)
    # 4. pass states across chunks
    S_in, S_c = _StatePassing.apply(s, chunk_decay, S0)  # (b, h, c, p, n), (b, h, p, n)
    # 5. off-diagonal blocks: y_l += exp(a_cum_l) S_in C_l
    C_decayed = Cc * from_start[..., None]  # (b, h, c, Q, n)
    y += torch.matmul(C_decayed, S_in.transpose(-1, -2))  # (b, h, c, Q, p)
    y = y.view(b, h, -1, p)[:, :, :l].transpose(1, 2)  # (b, h, c*Q, p) -> (b, l, h, p)
    return y.contiguous(), S_c


def _carry_masks(seqs: tuple[Tensor, Tensor], pad: int, Q: int) -> dict[str, Tensor]:
    """Packed rows: which contributions stay inside one sequence, per chunk (broadcast over heads).

    pair (b, 1, c, Q, Q): token s reaches token l; end (b, 1, c, Q): token s reaches the chunk's
    last position; start (b, 1, c, Q): the state entering the chunk reaches token l; through
    (b, 1, c): it reaches the chunk's end. The tail padding continues the last sequence.
    """
    prev, idx = seqs  # (b, 1), (b, l)
    idx = torch.cat([idx, idx[:, -1:].expand(-1, pad)], dim=1) if pad else idx
    chunks = idx.view(idx.shape[0], 1, -1, Q)  # (b, 1, c, Q)
    before = torch.cat([prev, idx[:, Q - 1:-1:Q]], dim=1)[:, None]  # (b, 1, c): sequence of the entering state
    last = chunks[..., -1]  # (b, 1, c)
    return {"pair": chunks[..., :, None] == chunks[..., None, :], "end": chunks == last[..., None],
            "start": chunks == before[..., None], "through": last == before}
