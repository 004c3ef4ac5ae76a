"""One dispatch point for the SSD scan and step: mamba-ssm's Triton kernels or the torch reference.

mamba-ssm is an optional extra (``pip install 'mmmamba[cuda]'``); without CUDA it does not even
import, so it is imported lazily, on first use, and every path falls back to ``ssd_ref``.
impl: "auto" (kernel for CUDA tensors when mamba-ssm imports, else torch), "torch", "kernel".
"""
from __future__ import annotations

import functools
import warnings
from types import SimpleNamespace

import torch
from torch import Tensor

from .ssd_ref import ssd_chunked, ssd_step

IMPLS = ("auto", "torch", "kernel")
_fallback_warned = False


@functools.lru_cache(maxsize=None)
def _load_kernels() -> tuple[SimpleNamespace | None, str]:
    """(kernels, "") once mamba-ssm imports, else (None, why it did not)."""
    try:
        from mamba_ssm.ops.triton.selective_state_update import selective_state_update  # optional: needs CUDA
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    except Exception as e:  # ImportError, or whatever its package init raises without CUDA
        return None, f"{type(e).__name__}: {e}"
    return SimpleNamespace(chunk_scan=mamba_chunk_scan_combined,
                           state_update=selective_state_update), ""


def kernels_available() -> bool:
    """True when mamba-ssm's Triton SSD kernels import."""
    return _load_kernels()[0] is not None


def _is_cuda(t: Tensor) -> bool:
    return t.is_cuda


def _use_kernel(impl: str, x: Tensor) -> bool:
    """Resolve ``impl`` for tensors like ``x``; warns once per process when auto falls back."""
    global _fallback_warned
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if impl == "torch":
        return False
    kernels, why = _load_kernels()
    if impl == "kernel":
        if kernels is None:
            raise RuntimeError(f"impl='kernel' needs mamba-ssm's Triton kernels, which did not import "
                               f"({why}); install the 'cuda' extra or use impl='torch'")
        if not _is_cuda(x):
            raise RuntimeError(f"impl='kernel' needs CUDA tensors, got device {x.device}")
        return True
    if not _is_cuda(x):
        return False
    if kernels is None and not _fallback_warned:
        _fallback_warned = True
        warnings.warn(f"SSD kernels unavailable ({why}); using the slower pure-PyTorch scan",
                      RuntimeWarning, stacklevel=3)
    return kernels is not None


def ssd_scan(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk_size: int,
             initial_state: Tensor | None = None, impl: str = "auto",
             seq_idx: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Prefill scan. x (b, l, h, p), dt (b, l, h) > 0, A (h,), B, C (b, l, h, n),
    initial_state (b, h, p, n) -> y (b, l, h, p) in x's dtype, final state (b, h, p, n) fp32.
    seq_idx (b, l) non-decreasing: packed sequences, the state resets where it changes."""
    if not _use_kernel(impl, x):
        # a short prefill needs no chunk longer than itself: padding it to a full chunk is wasted work
        chunk = min(chunk_size, max(16, -(-x.shape[1] // 16) * 16))
        return ssd_chunked(x, dt, A, B, C, chunk_size=chunk, initial_state=initial_state, seq_idx=seq_idx)
    init = initial_state.float() if initial_state is not None else None
    extra = {} if seq_idx is None else {"seq_idx": seq_idx.to(torch.int32).contiguous()}
    y, final = _load_kernels()[0].chunk_scan(x, dt, A.float(), B, C, chunk_size, initial_states=init,
                                             return_final_states=True, **extra)
    return y, final


def ssd_update(state: Tensor, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor,
               impl: str = "auto") -> Tensor:
    """Decode step, ``state`` (b, h, p, n) fp32 updated in place. x (b, h, p), dt (b, h) > 0,
    A (h,), B, C (b, h, n) -> y (b, h, p) in x's dtype."""
    if not _use_kernel(impl, x):
        return ssd_step(state, x, dt, A, B, C, inplace=True)[0]
    b, h, p = x.shape
    n = B.shape[-1]
    dt_p = dt[..., None].expand(b, h, p)  # (b, h) -> (b, h, p), stride 0 over p
    A_pn = A.float()[:, None, None].expand(h, p, n)  # (h,) -> (h, p, n), stride 0 over p, n
    # mamba-ssm 2.2.6 and 2.3.2 fail when D or dt_bias is None (they unpack their strides anyway),
    # so pass exact zeros: dt + 0 and y + 0 * x leave the result unchanged.
    zeros_hp = A_pn.new_zeros(h, 1).expand(h, p)  # (h, p), stride 0 over p
    return _load_kernels()[0].state_update(state, x, dt_p, A_pn, B, C, D=zeros_hp, dt_bias=zeros_hp,
                                           dt_softplus=False)
