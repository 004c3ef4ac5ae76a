"""CUDA-graph capture and replay of a step that reads and writes only preallocated tensors.

A decode step at batch 1 launches hundreds of small kernels; replaying them as one graph removes
the per-kernel CPU launch cost. The step must have static shapes and no host synchronisation
(``MMModel.step`` is written that way). Everything here is a no-op question on a
machine without CUDA: ``graphs_supported`` says False and callers run the step eagerly.
"""
from __future__ import annotations

from collections.abc import Callable

import torch


def graphs_supported(device: torch.device | str) -> bool:
    """True when ``device`` is a CUDA device of a torch build that can capture graphs."""
    return torch.device(device).type == "cuda" and torch.cuda.is_available() and hasattr(torch.cuda, "CUDAGraph")


def capture(fn: Callable[[], torch.Tensor], warmup: int = 2,
            reset: Callable[[], None] | None = None) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
    """Warm ``fn`` up on a side stream (lazy inits, compilation, autotuning), call ``reset`` to undo
    the warm-up's side effects, then capture one call. Returns (graph, its static output tensor).

    Capturing records kernels without running them; ``graph.replay()`` runs them on the same
    memory and refreshes the output tensor in place.
    """
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    if reset is not None:
        reset()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph, out
