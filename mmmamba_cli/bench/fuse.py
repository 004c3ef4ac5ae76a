"""Fused projection weights for the decode step, sharing storage with the model's parameters.

A decode step multiplies one token by every weight matrix, so it is bound by memory bandwidth
and by the number of kernels. Reading [x; B; C; z; dt] (Mamba), [q; k; v] (attention) and
[w1; w3] (MLP) as one matrix each turns 10 small matrix-vector products per layer into 4.
``fuse_projections`` concatenates the rows once and re-points each ``nn.Linear`` weight at its
slice of the fused matrix, so the model computes exactly what it did and no memory is doubled.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..model.config import ATTENTION
from ..model.model import MMModel


@torch.no_grad()
def _fuse(linears: list[nn.Linear]) -> Tensor:
    """Stack the weights by rows; each linear's weight becomes a view of the stack."""
    fused = torch.cat([m.weight.detach() for m in linears], dim=0)
    start = 0
    for m in linears:
        rows = m.weight.shape[0]
        m.weight.data = fused[start:start + rows]
        start += rows
    return fused


def _bias(linears: list[nn.Linear]) -> Tensor | None:
    """Concatenated biases (zeros where a linear has none), or None when none has one."""
    if all(m.bias is None for m in linears):
        return None
    return torch.cat([m.bias.detach() if m.bias is not None else m.weight.new_zeros(m.weight.shape[0])
                      for m in linears])


def _fused_once(module: nn.Module, name: str, linears: list[nn.Linear]) -> Tensor:
    """The fused matrix, made on first use and cached on the module (it must stay a view owner)."""
    fused = getattr(module, name, None)
    if fused is None or linears[0].weight.data_ptr() != fused.data_ptr():
        fused = _fuse(linears)
        setattr(module, name, fused)
    return fused


def fuse_projections(model: MMModel) -> list[dict[str, Tensor]]:
    """Fuse every layer's projections in place; return per-layer tensors for ``decode_layers``.

    Call after any dtype/device conversion (``.to`` makes new tensors and undoes the sharing);
    the returned tensors are a snapshot (dt_bias and A are precomputed in fp32).
    """
    params = []
    for layer in model.layers:
        mx = layer.mixer
        p = {"norm": layer.attention_norm.weight.detach(), "ffn_norm": layer.ffn_norm.weight.detach(),
             "w13": _fused_once(layer.mlp, "_fused_w13", [layer.mlp.w1, layer.mlp.w3]),
             "w2": layer.mlp.w2.weight.detach()}
        if layer.kind == ATTENTION:
            lin = [mx.q_proj, mx.k_proj, mx.v_proj]
            p.update(w_qkv=_fused_once(mx, "_fused_qkv", lin), b_qkv=_bias(lin),
                     w_o=mx.o_proj.weight.detach(), b_o=_bias([mx.o_proj]))
        else:
            lin = [mx.x_proj, mx.B_proj, mx.C_proj, mx.z_proj, mx.dt_proj]
            k = mx.conv1d.weight.shape[-1]
            p.update(w_in=_fused_once(mx, "_fused_in", lin), b_in=_bias(lin),
                     conv_w=mx.conv1d.weight.detach().view(-1, k), conv_b=mx.conv1d.bias.detach(),
                     dt_bias=mx.dt_bias.detach().float(), A=-torch.exp(mx.A_log.detach().float()),
                     head_norm=mx.norm.weight.detach(),
                     w_out=mx.out_proj.weight.detach(), b_out=_bias([mx.out_proj]))
        params.append({k: v for k, v in p.items() if v is not None})
    return params
