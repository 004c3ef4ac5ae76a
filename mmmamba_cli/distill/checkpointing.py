"""Activation checkpointing of the student's layers (``train.activation_checkpointing``).

Each layer's call is wrapped in ``torch.utils.checkpoint`` (non-reentrant): its activations are
dropped after the forward and recomputed during the backward, so a layer's intermediates live
only while that layer is being differentiated. Gradients are unchanged. Which call is wrapped
depends on how the objective drives the student: the whole layer (``forward``, end-to-end KL)
or only its mixer (``mix``, layer-wise stages, whose inputs come from the teacher).
"""
from __future__ import annotations

import functools

import torch
from torch.utils.checkpoint import checkpoint


def checkpoint_layers(model: torch.nn.Module, method: str) -> int:
    """Wrap ``layer.<method>`` of every layer of ``model`` (an MMModel); returns how many."""
    for layer in model.layers:
        original = getattr(type(layer), method)
        setattr(layer, method, functools.partial(_checkpointed, functools.partial(original, layer)))
    return len(model.layers)


def _checkpointed(fn, *args, **kwargs):
    if not torch.is_grad_enabled():
        return fn(*args, **kwargs)
    return checkpoint(fn, *args, use_reentrant=False, **kwargs)
