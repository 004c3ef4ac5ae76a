"""One model class for teacher, linear student and hybrid: a stack of global layers whose
mixer is attention or Mamba-2 according to ``config.layer_types``."""
from __future__ import annotations

import torch
from torch import nn

from .attention import Attention
from .cache import HybridCache
from .config import ATTENTION, ModelConfig
from .embedding import Embedder
from .layers import RMSNorm, SwiGLU, rope_cos_sin
from .mamba2 import Mamba2


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

    def forward(self, h, rope, key_mask=None, valid=None, state=None, seq_idx=None):
        h = h + self.mixer_out(self.mix(h, rope, key_mask, valid, state, seq_idx))
        return h + self.mlp(self.ffn_norm(h))

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
    def prepare(self, input_ids, attention_mask=None, cache: HybridCache | None = None, seq_idx=None):
        """Positions, rope tables, key mask and valid mask for this forward call.

        seq_idx (b, l), non-decreasing, numbers the sequences packed into each row: positions
        restart at 0 where it changes (right padding only, no cache).
        """
        b, l = input_ids.shape
        valid = attention_mask.bool() if attention_mask is not None else None
        if seq_idx is not None:
            if cache is not None:
                raise ValueError("seq_idx (packed sequences) cannot be used with a cache")
            t = torch.arange(l, device=input_ids.device).expand(b, l)
            starts = torch.ones_like(seq_idx, dtype=torch.bool)
            starts[:, 1:] = seq_idx[:, 1:] != seq_idx[:, :-1]
            positions = t - torch.cummax(torch.where(starts, t, 0), dim=1).values  # (b, l)
            key_mask = None if valid is None or bool(valid.all()) else valid
            seq_len = int(positions.max()) + 1
        elif cache is not None:
            cur = valid if valid is not None else torch.ones(b, l, dtype=torch.bool, device=input_ids.device)
            positions = cache.next_pos[:, None] + torch.cumsum(cur.long(), 1) - 1
            cache.next_pos = cache.next_pos + cur.long().sum(1)
            cache.mask = torch.cat([cache.mask, cur], 1)
            key_mask = None if bool(cache.mask.all()) else cache.mask
            seq_len = int(cache.next_pos.max())
        else:
            if valid is None:
                positions = torch.arange(l, device=input_ids.device)[None].expand(b, l)
            else:
                positions = (torch.cumsum(valid.long(), 1) - 1).clamp(min=0)
            key_mask = None if valid is None or bool(valid.all()) else valid
            seq_len = int(positions.max()) + 1
        positions = positions.clamp(min=0)
        c = self.config
        ropes = {"llm": rope_cos_sin(c.llm_layer, positions, seq_len)}
        # the embedding module's layers share the LLM's tables unless their shape differs
        ropes["embed"] = ropes["llm"] if c.embed_layer == c.llm_layer else rope_cos_sin(c.embed_layer, positions,
                                                                                            seq_len)
        if valid is not None and bool(valid.all()):
            valid = None
        return ropes, key_mask, valid

    def rope_for(self, ropes, i):
        return ropes["embed" if i < self.config.num_embed_layers else "llm"]

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
        h = self.embed(input_ids, pixel_values)
        ropes, key_mask, valid = self.prepare(input_ids, attention_mask, cache, seq_idx)
        for i, layer in enumerate(self.layers):
            state = cache.layers[i] if cache is not None else None
            h = layer(h, self.rope_for(ropes, i), key_mask, valid, state, seq_idx)
        h = self.norm(h)
        if not head:
            return h
        if logits_to_keep:
            h = h[:, -logits_to_keep:]
        logits = self.lm_head(h)
        return (logits, h) if return_hidden else logits

    def new_cache(self, batch_size: int, capacity: int = 256) -> HybridCache:
        p = next(self.parameters())
        return HybridCache(self.config, batch_size, p.device, p.dtype, capacity)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
