"""Token-level divergences between two next-token distributions, computed in token chunks.

One home for the KL used by distillation (with gradients), evaluation and hybrid placement (no
gradients). Inputs are logits of shape (n, V) (already selected tokens) or (b, l, V) with a
(b, l) bool mask; memory beyond the inputs is bounded by ``chunk`` x V, whatever n is:

- ``kl_sum``: sum over tokens of T^2 * KL(softmax(t/T) || softmax(s/T)), differentiable in the
  student logits. Its backward recomputes each chunk instead of keeping (n, V) intermediates:
  d/ds [T^2 KL] = T * (softmax(s/T) - softmax(t/T)).
- ``token_stats``: KL sum, top-1 agreement count and both models' NLL of given targets, no grad.
- ``head_kl_sum`` / ``head_ce_sum``: the same KL, and the next-token cross-entropy, from hidden
  states (n, C) and output-head weights (V, C): logits exist one chunk at a time, in the forward
  and again in the backward, so not even the (n, V) logits and their gradient are ever held.
  Gradients flow to the student's hidden states and, when it trains, its head weight.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

DEFAULT_CHUNK = 1024
HEAD_CHUNK_ELEMS = 2**23  # head_* losses: logits elements per chunk (32 MiB in fp32), whatever V is


def _select(logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(b, l, V) + (b, l) mask -> (n, V); (n, V) passes through."""
    if mask is None:
        return logits.reshape(-1, logits.shape[-1])
    return logits[mask]


def _wide(x: torch.Tensor) -> torch.Tensor:
    """fp32 for the softmax (fp64 stays fp64)."""
    return x if x.dtype == torch.float64 else x.float()


def _kl_rows(s: torch.Tensor, t: torch.Tensor, temperature: float) -> torch.Tensor:
    """(c, V) logits -> (c,) KL(p_t || p_s) at temperature T, fp32 (fp64 inputs: fp64)."""
    log_t = F.log_softmax(_wide(t) / temperature, -1)
    log_s = F.log_softmax(_wide(s) / temperature, -1)
    return (log_t.exp() * (log_t - log_s)).sum(-1)


class _ChunkedKL(torch.autograd.Function):
    @staticmethod
    def forward(ctx, s, t, temperature, chunk):  # s, t: (n, V)
        total = torch.zeros((), dtype=torch.float32, device=s.device)
        for i in range(0, s.shape[0], chunk):
            total = total + _kl_rows(s[i:i + chunk], t[i:i + chunk], temperature).sum()
        ctx.save_for_backward(s, t)
        ctx.temperature, ctx.chunk = temperature, chunk
        return total * temperature ** 2

    @staticmethod
    def backward(ctx, grad):
        s, t = ctx.saved_tensors
        temp, chunk = ctx.temperature, ctx.chunk
        grad_s = torch.empty_like(s) if ctx.needs_input_grad[0] else None
        if grad_s is not None:
            for i in range(0, s.shape[0], chunk):
                p_s = F.softmax(s[i:i + chunk].float() / temp, -1)
                p_t = F.softmax(t[i:i + chunk].float() / temp, -1)
                grad_s[i:i + chunk] = ((p_s - p_t) * (temp * grad)).to(s.dtype)
        return grad_s, None, None, None


def kl_sum(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor | None = None,
           temperature: float = 1.0, chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
    """Sum over (masked) tokens of T^2 * KL(teacher || student); gradient flows to the student only."""
    s, t = _select(student_logits, mask), _select(teacher_logits, mask).detach()
    if s.shape[0] == 0:
        return student_logits.sum() * 0.0
    return _ChunkedKL.apply(s, t, float(temperature), int(chunk))


@torch.no_grad()
def token_stats(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor | None = None,
                targets: torch.Tensor | None = None, chunk: int = DEFAULT_CHUNK) -> dict[str, float]:
    """Sums over (masked) tokens: ``kl``, ``agree`` (same argmax), ``nll`` / ``teacher_nll`` of
    ``targets`` (same leading shape as the logits) when given, and ``tokens``."""
    s, t = _select(student_logits, mask), _select(teacher_logits, mask)
    tg = _select(targets[..., None], mask)[:, 0] if targets is not None else None
    out = {"kl": 0.0, "agree": 0.0, "nll": 0.0, "teacher_nll": 0.0, "tokens": int(s.shape[0])}
    for i in range(0, s.shape[0], chunk):
        sc, tc = s[i:i + chunk].float(), t[i:i + chunk].float()
        log_s, log_t = F.log_softmax(sc, -1), F.log_softmax(tc, -1)
        out["kl"] += float((log_t.exp() * (log_t - log_s)).sum())
        out["agree"] += float((sc.argmax(-1) == tc.argmax(-1)).sum())
        if tg is not None:
            idx = tg[i:i + chunk, None]
            out["nll"] -= float(log_s.gather(-1, idx).sum())
            out["teacher_nll"] -= float(log_t.gather(-1, idx).sum())
    return out


def _no_autocast(device: torch.device):
    """The head's logits in the inputs' own dtype, the same in the forward and the backward."""
    return torch.autocast(device_type=device.type, enabled=False)


class _HeadKL(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h_s, w_s, h_t, w_t, temperature, chunk):  # h (n, C), w (V, C)
        total = torch.zeros((), dtype=_wide(h_s).dtype, device=h_s.device)
        with _no_autocast(h_s.device):
            for i in range(0, h_s.shape[0], chunk):
                total = total + _kl_rows(h_s[i:i + chunk] @ w_s.T, h_t[i:i + chunk] @ w_t.T, temperature).sum()
        ctx.save_for_backward(h_s, w_s, h_t, w_t)
        ctx.temperature, ctx.chunk = temperature, chunk
        return total * temperature ** 2

    @staticmethod
    def backward(ctx, grad):
        h_s, w_s, h_t, w_t = ctx.saved_tensors
        temp, chunk = ctx.temperature, ctx.chunk
        grad_h = torch.empty_like(h_s) if ctx.needs_input_grad[0] else None
        grad_w = torch.zeros_like(_wide(w_s)) if ctx.needs_input_grad[1] else None
        with _no_autocast(h_s.device):
            for i in range(0, h_s.shape[0], chunk):
                p_s = F.softmax(_wide(h_s[i:i + chunk] @ w_s.T) / temp, -1)
                p_t = F.softmax(_wide(h_t[i:i + chunk] @ w_t.T) / temp, -1)
                d = (p_s - p_t) * (temp * grad)  # (c, V): d loss / d student logits
                if grad_h is not None:
                    grad_h[i:i + chunk] = (d.to(w_s.dtype) @ w_s).to(h_s.dtype)
                if grad_w is not None:
                    grad_w += d.T @ _wide(h_s[i:i + chunk])
        return grad_h, None if grad_w is None else grad_w.to(w_s.dtype), None, None, None, None


class _HeadCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, w, targets, chunk):  # h (n, C), w (V, C), targets (n,)
        total = torch.zeros((), dtype=_wide(h).dtype, device=h.device)
        with _no_autocast(h.device):
            for i in range(0, h.shape[0], chunk):
                logits = _wide(h[i:i + chunk] @ w.T)
                total = total + (torch.logsumexp(logits, -1)
                                 - logits.gather(-1, targets[i:i + chunk, None])[:, 0]).sum()
        ctx.save_for_backward(h, w, targets)
        ctx.chunk = chunk
        return total

    @staticmethod
    def backward(ctx, grad):
        h, w, targets = ctx.saved_tensors
        chunk = ctx.chunk
        grad_h = torch.empty_like(h) if ctx.needs_input_grad[0] else None
        grad_w = torch.zeros_like(_wide(w)) if ctx.needs_input_grad[1] else None
        with _no_autocast(h.device):
            for i in range(0, h.shape[0], chunk):
                d = F.softmax(_wide(h[i:i + chunk] @ w.T), -1)
                d.scatter_add_(-1, targets[i:i + chunk, None], -torch.ones_like(d[:, :1]))
                d = d * grad
                if grad_h is not None:
                    grad_h[i:i + chunk] = (d.to(w.dtype) @ w).to(h.dtype)
                if grad_w is not None:
                    grad_w += d.T @ _wide(h[i:i + chunk])
        return grad_h, None if grad_w is None else grad_w.to(w.dtype), None, None


def head_chunk(vocab: int) -> int:
    """Tokens per chunk of the head_* losses: HEAD_CHUNK_ELEMS logits (at least 16 tokens)."""
    return max(16, HEAD_CHUNK_ELEMS // max(vocab, 1))


def head_kl_sum(student_hidden: torch.Tensor, student_head: torch.Tensor, teacher_hidden: torch.Tensor,
                teacher_head: torch.Tensor, mask: torch.Tensor | None = None, temperature: float = 1.0,
                chunk: int | None = None) -> torch.Tensor:
    """``kl_sum`` of the logits ``hidden @ head.T`` of both models, never holding (n, V) tensors.

    hidden (b, l, C) with a (b, l) mask, or (n, C); head (V, C). Teacher inputs get no gradient.
    ``chunk`` tokens at a time (default ``head_chunk(V)``: a few (chunk, V) fp32 temporaries).
    """
    h_s, h_t = _select(student_hidden, mask), _select(teacher_hidden, mask).detach()
    if h_s.shape[0] == 0:
        return student_hidden.sum() * 0.0
    chunk = chunk or head_chunk(student_head.shape[0])
    return _HeadKL.apply(h_s, student_head, h_t, teacher_head.detach(), float(temperature), int(chunk))


def head_ce_sum(hidden: torch.Tensor, head: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None,
                chunk: int | None = None) -> torch.Tensor:
    """Sum of cross-entropy of ``targets`` under the logits ``hidden @ head.T``, in token chunks.

    hidden (b, l, C) and targets (b, l) with a (b, l) mask, or (n, C) and (n,).
    """
    h, tg = _select(hidden, mask), _select(targets[..., None], mask)[:, 0]
    if h.shape[0] == 0:
        return hidden.sum() * 0.0
    return _HeadCE.apply(h, head, tg.long(), int(chunk or head_chunk(head.shape[0])))
