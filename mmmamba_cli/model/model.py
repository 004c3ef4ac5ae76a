"""One model class for teacher, linear student and hybrid: a stack of global layers whose
mixer is attention or Mamba-2 according to ``config.layer_types``.

Three ways through the same layers: ``forward`` (a whole sequence, optionally continuing a
cache), ``step`` (one token per row over a cache: static shapes, no host synchronisation) and the
layer walk (``layer_inputs`` + ``run_layers`` / ``trace_mixers``) that distillation and hybrid
placement use to look inside.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from .attention import Attention
from .cache import HybridCache
from .config import ATTENTION, ModelConfig
from .embedding import Embedder
from .layers import RMSNorm, SwiGLU, rope_cos_sin
from .mamba2 import Mamba2


@dataclass
class LayerInputs:
    """What each layer of one pass needs besides the hidden state."""

    ropes: dict[str, tuple[torch.Tensor, torch.Tensor]]  # "embed" | "llm" -> cos, sin (b, l, d)
    key_mask: torch.Tensor | None  # (b, kv_len) bool, real keys; None: all real
    valid: torch.Tensor | None     # (b, l) bool, real tokens; None: all real
    num_embed_layers: int
    seq_idx: torch.Tensor | None = None  # (b, l) packed-sequence numbers; None: one sequence per row

    def rope(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.ropes["embed" if layer < self.num_embed_layers else "llm"]


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, index: int):
        super().__init__()
        s = config.shape(index)
        self.index, self.kind = index, config.layer_types[index]
        self.attention_norm = RMSNorm(config.hidden_size, s.rms_norm_eps)
        self.mixer = (Attention(config.hidden_size, s) if self.kind == ATTENTION
                      else Mamba2(config.hidden_size, s, config.mamba))
        self.ffn_norm = RMSNorm(config.hidden_size, s.rms_norm_eps)
        self.mlp = SwiGLU(config.hidden_size, s.intermediate_size)

    def mix(self, h, rope, key_mask, valid, state, seq_idx=None):
        """The mixer's per-head output before its output projection (seq_idx: packed sequences)."""
        u = self.attention_norm(h)
        if self.kind == ATTENTION:
            return self.mixer.core(u, *rope, key_mask=key_mask, state=state, seq_idx=seq_idx)
        return self.mixer.core(u, valid=valid, state=state, seq_idx=seq_idx)

    def finish(self, h, y):
        """Residual add of the mixer output y (per head), then the MLP block."""
        h = h + self.mixer_out(y)
        return h + self.mlp(self.ffn_norm(h))

    def forward(self, h, rope, key_mask=None, valid=None, state=None, seq_idx=None):
        return self.finish(h, self.mix(h, rope, key_mask, valid, state, seq_idx))

    def step(self, h, rope, state, slot, key_mask):
        """One token per row: h (b, C) -> (b, C), updating this layer's ``state``."""
        u = self.attention_norm(h)
        if self.kind == ATTENTION:
            y = self.mixer.step(u, *rope, state=state, slot=slot, key_mask=key_mask)
        else:
            y = self.mixer.step(u, state)
        h = h + self.mixer_out(y)
        return h + self.mlp.step(self.ffn_norm(h))

    def mixer_out(self, y):
        return self.mixer.o_proj(y) if self.kind == ATTENTION else self.mixer.out_proj(y)


class MMModel(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embed = Embedder(config)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.output_vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.embed.embed_tokens.weight

    # ---- inputs ----------------------------------------------------------------------
    def _ropes(self, positions: torch.Tensor, seq_len: int) -> dict:
        c = self.config
        llm = rope_cos_sin(c.llm_layer, positions, seq_len)
        # the embedding module's layers share the LLM's tables unless their shape differs
        embed = llm if c.embed_layer == c.llm_layer else rope_cos_sin(c.embed_layer, positions, seq_len)
        return {"llm": llm, "embed": embed}

    def layer_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                     seq_idx: torch.Tensor | None = None) -> LayerInputs:
        """Positions (left padding skipped), RoPE tables and masks for a pass without a cache.

        seq_idx (b, l), non-decreasing, numbers the sequences packed into each row: positions
        restart at 0 where it changes (right padding only).
        """
        b, l = input_ids.shape
        valid = attention_mask.bool() if attention_mask is not None else None
        if seq_idx is not None:
            t = torch.arange(l, device=input_ids.device).expand(b, l)
            starts = torch.ones_like(seq_idx, dtype=torch.bool)
            starts[:, 1:] = seq_idx[:, 1:] != seq_idx[:, :-1]
            positions = t - torch.cummax(torch.where(starts, t, 0), dim=1).values  # (b, l)
        elif valid is None:
            positions = torch.arange(l, device=input_ids.device)[None].expand(b, l)
        else:
            positions = (torch.cumsum(valid.long(), 1) - 1).clamp(min=0)
        if valid is not None and bool(valid.all()):
            valid = None
        seq_len = int(positions.max()) + 1
        return LayerInputs(self._ropes(positions, seq_len), valid, valid, self.config.num_embed_layers, seq_idx)

    def _cached_inputs(self, input_ids, attention_mask, cache: HybridCache) -> LayerInputs:
        """Book the new tokens in ``cache`` and return what the layers need to continue it."""
        valid = attention_mask.bool() if attention_mask is not None else None
        positions, _ = cache.advance(valid, input_ids.shape[1])
        cache.max_pos = int(cache.next_pos.max())
        seen = cache.mask[:, :cache.seen]
        key_mask = None if bool(seen.all()) else seen
        if valid is not None and bool(valid.all()):
            valid = None
        return LayerInputs(self._ropes(positions, cache.max_pos), key_mask, valid, self.config.num_embed_layers)

    # ---- the layer walk --------------------------------------------------------------
    def run_layers(self, h: torch.Tensor, inputs: LayerInputs, start: int = 0, stop: int | None = None,
                   cache: HybridCache | None = None) -> torch.Tensor:
        """Layers start..stop-1 from hidden state h (b, l, C) -> the hidden state after them."""
        stop = len(self.layers) if stop is None else stop
        for i in range(start, stop):
            state = cache.layers[i] if cache is not None else None
            h = self.layers[i](h, inputs.rope(i), inputs.key_mask, inputs.valid, state, inputs.seq_idx)
        return h

    def mixer_output(self, i: int, h: torch.Tensor, inputs: LayerInputs) -> torch.Tensor:
        """Layer i's mixer output per head, before its output projection, for input h (b, l, C)."""
        return self.layers[i].mix(h, inputs.rope(i), inputs.key_mask, inputs.valid, None, inputs.seq_idx)

    def trace_mixers(self, h: torch.Tensor, inputs: LayerInputs, stop: int | None = None,
                     ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """(i, input h_i, mixer output y_i) for layers 0..stop-1, each layer's own output flowing on."""
        stop = len(self.layers) if stop is None else stop
        for i in range(stop):
            y = self.mixer_output(i, h, inputs)
            yield i, h, y
            h = self.layers[i].finish(h, y)

    # ---- forward ---------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, cache: HybridCache | None = None,
                logits_to_keep: int = 0, return_hidden: bool = False, seq_idx: torch.Tensor | None = None,
                head: bool = True):
        """Logits (b, l, V) (only the last ``logits_to_keep`` positions when > 0).

        ``seq_idx`` (b, l): several sequences packed per row, each computed as if alone.
        ``head=False``: the final hidden states (b, l, C) instead, for losses that apply
        ``lm_head.weight`` themselves in token chunks.
        """
        h = self.final_hidden(input_ids, pixel_values, attention_mask, cache, seq_idx)
        if not head:
            return h
        if logits_to_keep:
            h = h[:, -logits_to_keep:]
        logits = self.lm_head(h)
        return (logits, h) if return_hidden else logits

    def final_hidden(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None,
                     attention_mask: torch.Tensor | None = None, cache: HybridCache | None = None,
                     seq_idx: torch.Tensor | None = None) -> torch.Tensor:
        """The normed hidden state (b, l, C) the output head reads: ``lm_head`` of any rows of it
        gives their logits, so a caller can score a few positions without (b, l, V) logits."""
        h = self.embed(input_ids, pixel_values)
        if seq_idx is not None and cache is not None:
            raise ValueError("seq_idx (packed sequences) cannot be used with a cache")
        inputs = (self.layer_inputs(input_ids, attention_mask, seq_idx) if cache is None
                  else self._cached_inputs(input_ids, attention_mask, cache))
        return self.norm(self.run_layers(h, inputs, cache=cache))

    # ---- decoding --------------------------------------------------------------------
    def step(self, ids: torch.Tensor, cache: HybridCache) -> torch.Tensor:
        """One new token per row, ids (b,) or (b, 1), after a prefill into ``cache`` -> logits (b, V).

        Every tensor it touches is preallocated or of a fixed shape and nothing waits for the
        device, so a CUDA graph can capture it (``runtime.decoder``).
        """
        ids = ids.reshape(-1)
        pos, slot = cache.step_positions()  # (b, 1), (1,)
        ropes = self._ropes(pos, cache.max_pos)
        key_mask = cache.mask[:, :cache.key_len()] if cache.has_kv else None
        h = self._embed_tokens(ids)  # (b, C)
        for i, layer in enumerate(self.layers):
            rope = ropes["embed" if i < self.config.num_embed_layers else "llm"]
            h = layer.step(h, rope, cache.layers[i], slot, key_mask)
        return self.lm_head(self.norm(h))

    def _embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """Text embedding of ids (b,) without the embedder's data-dependent branch (no host sync)."""
        e, V = self.embed, self.config.vocab_size
        if e.special is None:
            return e.embed_tokens(ids)
        special = ids >= V
        sp = e.special((ids - V).clamp(0, e.special.num_embeddings - 1))
        return torch.where(special[..., None], sp, e.embed_tokens(ids.masked_fill(special, 0)))

    def fuse_for_decode(self, on: bool = True) -> "MMModel":
        """Let ``step`` read each layer's input projections as one matrix ([q; k; v], [x; B; C; z; dt],
        [w1; w3]): a copy of those weights, outside the parameters. Refreshes copies whose source
        weights changed since; ``on=False`` drops them."""
        for layer in self.layers:
            layer.mixer.fuse(on)
            layer.mlp.fuse(on)
        return self

    def new_cache(self, batch_size: int, capacity: int = 256) -> HybridCache:
        p = next(self.parameters())
        return HybridCache(self.config, batch_size, p.device, p.dtype, capacity)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
