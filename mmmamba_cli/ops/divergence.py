"""Token-level divergences between two next-token distributions, computed in token chunks.

One home for the KL used by distillation (with gradients), evaluation and hybrid placement (no
gradients). Inputs are logits of shape (n, V) (already selected tokens) or (b, l, V) with a
(b, l) bool mask; memory beyond the inputs is bounded by ``chunk`` x V, whatever n is:

- ``kl_sum``: sum over tokens of T^2 * KL(softmax(t/T) || softmax(s/T)), differentiable in the
  student logits. Its backward recomputes each chunk instead of keeping (n, V) intermediates:
  d/ds [T^2 KL] = T * (softmax(s/T) - softmax(t/T)).
- ``token_stats``: KL sum, top-1 agreement count and both models' NLL of given targets, no grad.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

DEFAULT_CHUNK = 1024


def _select(logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(b, l, V) + (b, l) mask -> (n, V); (n, V) passes through."""
    if mask is None:
        return logits.reshape(-1, logits.shape[-1])
    return logits[mask]


def _kl_rows(s: torch.Tensor, t: torch.Tensor, temperature: float) -> torch.Tensor:
    """(c, V) logits -> (c,) KL(p_t || p_s) at temperature T, fp32."""
    log_t = F.log_softmax(t.float() / temperature, -1)
    log_s = F.log_softmax(s.float() / temperature, -1)
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
