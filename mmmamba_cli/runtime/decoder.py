"""The decode step the runtime calls: ``MMModel.step`` as is, or captured once as a CUDA graph.

At batch 1 a decode step launches hundreds of small kernels; on a GPU replaying them as one graph
removes the per-kernel launch cost. ``MMModel.step`` touches only preallocated tensors and never
waits for the device, so it can be captured as it is: the cache attends over its whole capacity
under its mask while captured (``cache.static``), and the host-side counters are kept here.
``make_decoder`` picks the graph on CUDA when it can and falls back to the plain step otherwise.
"""
from __future__ import annotations

import warnings

import torch
from torch import Tensor

from ..model.cache import HybridCache, KVState
from ..model.config import ModelConfig
from ..model.model import MMModel
from .cuda_graph import capture, graphs_supported

GRAPH_CHOICES = ("auto", "on", "off")


def graph_unsupported(config: ModelConfig) -> str:
    """'' when a captured step computes what ``MMModel.step`` does for this config, else why not."""
    for s in (config.embed_layer, config.llm_layer):
        scaling = s.rope_scaling or {}
        if scaling.get("type", scaling.get("rope_type")) == "dynamic":  # base depends on the length
            return "dynamic-NTK RoPE scaling"
    return ""


class EagerDecoder:
    """``MMModel.step`` called directly (any device)."""

    kind = "eager"

    def __init__(self, model: MMModel, cache: HybridCache):
        self.model, self.cache = model, cache

    def step(self, ids: Tensor) -> Tensor:
        return self.model.step(ids, self.cache)

    def close(self) -> None:
        pass


class GraphDecoder:
    """``MMModel.step`` over ``cache`` captured once as a CUDA graph and replayed per token.

    The logits it returns live in one static buffer, overwritten by the next step. ``close``
    hands the cache back to ordinary use. The cache can be ``reset`` and refilled by a prefill of
    a new prompt in between (same tensors), so one capture serves many requests.
    """

    kind = "cuda-graph"

    def __init__(self, model: MMModel, cache: HybridCache, warmup: int = 2):
        why = graph_unsupported(model.config)
        if why:
            raise ValueError(f"a captured decode step does not support {why}")
        self.model, self.cache = model, cache
        self.token = torch.zeros(cache.batch_size, dtype=torch.long, device=cache.next_pos.device)
        cache.static = True
        restore = self._restorer()
        try:
            self.graph, self.logits = capture(lambda: model.step(self.token, cache), warmup, restore)
        except BaseException:
            cache.static = False
            raise
        finally:
            restore()

    def step(self, ids: Tensor) -> Tensor:
        c = self.cache
        if c.seen >= c.capacity:
            raise ValueError(f"the cache is full ({c.capacity} slots): allocate more capacity")
        self.token.copy_(ids.reshape(-1))
        self.graph.replay()
        c.seen += 1  # the host-side counters the replay cannot update
        c.max_pos += 1
        return self.logits

    def close(self) -> None:
        self.cache.static = False

    def _restorer(self):
        """Puts back every tensor and counter the warm-up and capture changed (KV slots past the
        current one need nothing: they stay masked until written again)."""
        c = self.cache
        live = [c.mask, c.next_pos, c.slot] + [t for s in c.layers if not isinstance(s, KVState)
                                               for t in (s.conv, s.ssm)]
        saved, counters = [t.clone() for t in live], (c.seen, c.max_pos)

        def restore() -> None:
            for dst, src in zip(live, saved):
                dst.copy_(src)
            c.seen, c.max_pos = counters
        return restore


def make_decoder(model: MMModel, cache: HybridCache, graphs: str = "auto") -> EagerDecoder | GraphDecoder:
    """The fastest decoder that is exact here: a CUDA graph on CUDA (``graphs`` auto|on|off), else
    the plain step. A failed capture under ``auto`` warns once and falls back."""
    if graphs not in GRAPH_CHOICES:
        raise ValueError(f"graphs must be one of {GRAPH_CHOICES}, got {graphs!r}")
    device = cache.next_pos.device
    want = graphs == "on" or (graphs == "auto" and graphs_supported(device) and not graph_unsupported(model.config))
    if not want:
        return EagerDecoder(model, cache)
    try:
        return GraphDecoder(model, cache)
    except Exception as e:  # noqa: BLE001 - capture failures vary; the plain step is exact
        if graphs == "on":
            raise
        warnings.warn(f"CUDA-graph capture failed ({type(e).__name__}: {e}); decoding without it",
                      RuntimeWarning, stacklevel=2)
        return EagerDecoder(model, cache)
