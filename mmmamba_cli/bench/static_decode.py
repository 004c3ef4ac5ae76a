"""Fast single-token decoding over a preallocated ``HybridCache``: static shapes, no host syncs.

``MMModel.forward`` with a cache grows Python-side bookkeeping every step (the padding mask, the
KV length) and synchronises with the device; that is right for a general forward but rules out
CUDA graphs. ``StaticDecoder`` keeps the next position (b,), the next cache slot (1,) and a key
mask over the whole KV capacity as device tensors, writes keys and values with ``index_copy_``,
and attends over the full capacity under the mask. Use it after a prefill that allocated enough
capacity (``model.new_cache(b, capacity=prompt + new_tokens)``)::

    dec = StaticDecoder(model, cache, graphs=True)      # graphs: CUDA only, else eager
    logits = dec.step(next_ids)                         # (b, V); a static buffer under graphs
    ...
    dec.sync_cache()                                    # hand the cache back to model.forward
"""
from __future__ import annotations

import warnings

import torch
from torch import Tensor

from ..model.cache import HybridCache, KVState
from ..model.config import ATTENTION, ModelConfig
from ..model.layers import rope_cos_sin
from ..model.model import MMModel
from . import decode_layers as dl
from .cuda_graph import capture, graphs_supported
from .fuse import fuse_projections

ATTENTION_IMPLS = {"sdpa": dl.grouped_attention, "eager": dl.eager_attention}


def static_decode_supported(config: ModelConfig) -> str:
    """'' when ``StaticDecoder`` computes what ``MMModel`` does for this config, else why not."""
    for s in (config.embed_layer, config.llm_layer):
        kind = (s.rope_scaling or {}).get("type", (s.rope_scaling or {}).get("rope_type"))
        if kind == "dynamic":  # its base depends on the current length: not a static step
            return "dynamic-NTK RoPE scaling"
    return ""


def _kv_splits(capacity: int, device: torch.device) -> int:
    """Blocks for the attention-value product on a GPU: keeps >= 512 keys per block."""
    if device.type != "cuda":
        return 1
    s = 64
    while s > 1 and (capacity % s or capacity // s < 512):
        s //= 2
    return s


class StaticDecoder:
    """Greedy or sampled decoding one token per ``step`` over ``cache`` (see the module docstring).

    graphs: capture the step as a CUDA graph (CUDA only; ignored elsewhere). compile: compile the
    per-layer functions (they then use the PyTorch SSD step, which the compiler fuses).
    attention: "sdpa" (grouped KV read once) or "eager" (the paper's teacher). Fuses the model's
    projection weights in place (``fuse.py``): call after any ``.to(...)`` of the model.
    """

    def __init__(self, model: MMModel, cache: HybridCache, graphs: bool = False, compile: bool = False,
                 attention: str = "sdpa", warmup: int = 2):
        why = static_decode_supported(model.config)
        if why:
            raise ValueError(f"static decoding does not support {why}")
        if attention not in ATTENTION_IMPLS:
            raise ValueError(f"attention must be one of {sorted(ATTENTION_IMPLS)}, got {attention!r}")
        self.model, self.cache, self.config = model, cache, model.config
        device = cache.next_pos.device
        b, seen = cache.next_pos.shape[0], cache.seen
        kv = [s for s in cache.layers if isinstance(s, KVState)]
        self.capacity = min(s.k.shape[2] for s in kv) if kv else None
        self.steps_left = (self.capacity - seen) if kv else None
        if kv and self.steps_left <= 0:
            raise ValueError(f"the KV cache is full ({seen} of {self.capacity}): allocate more capacity")
        self.kv_ptrs = self._kv_ptrs()
        self.params = fuse_projections(model)
        self.token = torch.zeros(b, 1, dtype=torch.long, device=device)   # static input
        self.pos = cache.next_pos.clone()                                    # (b,) next positions
        self.slot = torch.full((1,), seen, dtype=torch.long, device=device)  # next cache slot
        self.key_mask = torch.zeros(b, self.capacity or 0, dtype=torch.bool, device=device)
        if kv:
            self.key_mask[:, :seen] = cache.mask
        self.seen0, self.steps = seen, 0
        self.attend = ATTENTION_IMPLS[attention]
        self.splits = _kv_splits(self.capacity, device) if kv else 1
        self.compiled = compile
        self.impl = "torch" if compile else model.config.mamba.impl
        self.fns = {"mamba": dl.mamba_mixer, "qkv": dl.attention_qkv, "out": dl.attention_out, "mlp": dl.mlp_block}
        if compile:
            self.fns = {k: torch.compile(f, dynamic=False) for k, f in self.fns.items()}
        self.graph, self.logits = None, None
        if graphs and graphs_supported(device) or compile:
            self._prepare(graphs and graphs_supported(device), warmup)

    # ---- public ----------------------------------------------------------------------
    def step(self, token_ids: Tensor) -> Tensor:
        """Feed (b,) or (b, 1) token ids; return next-token logits (b, V)."""
        if self.steps_left is not None and self.steps >= self.steps_left:
            raise ValueError(f"KV cache capacity {self.capacity} reached")
        self.token.copy_(token_ids.view(-1, 1))
        self.steps += 1
        if self.graph is None:
            return self._step()
        self.graph.replay()
        return self.logits

    def rebind(self) -> None:
        """Take up the cache again after it was reset and refilled by a new prefill (same tensors,
        so a captured graph stays valid)."""
        seen = self.cache.seen
        if self._kv_ptrs() != self.kv_ptrs:
            raise ValueError("the cache's KV tensors were reallocated: build a new decoder")
        if self.capacity is not None and seen >= self.capacity:
            raise ValueError(f"the KV cache is full ({seen} of {self.capacity})")
        self.pos.copy_(self.cache.next_pos)
        self.slot.fill_(seen)
        if self.key_mask.numel():
            self.key_mask.zero_()
            self.key_mask[:, :seen] = self.cache.mask
        self.seen0, self.steps = seen, 0
        self.steps_left = self.capacity - seen if self.capacity is not None else None

    def _kv_ptrs(self) -> list[int]:
        return [s.k.data_ptr() for s in self.cache.layers if isinstance(s, KVState)]

    def sync_cache(self) -> HybridCache:
        """Write the decoded steps back into the cache's Python-side bookkeeping."""
        n = self.seen0 + self.steps
        for s in self.cache.layers:
            if isinstance(s, KVState):
                s.length = n
        b = self.pos.shape[0]
        new = torch.ones(b, self.steps, dtype=torch.bool, device=self.pos.device)
        self.cache.mask = torch.cat([self.cache.mask[:, :self.seen0], new], 1)
        self.cache.next_pos = self.pos.clone()
        return self.cache

    # ---- the step ----------------------------------------------------------------------
    def _embed(self, ids: Tensor) -> Tensor:
        """Token embedding without the data-dependent branch of ``Embedder`` (no host sync)."""
        e, V = self.model.embed, self.config.vocab_size
        if e.special is None:
            return e.embed_tokens(ids)
        special = ids >= V
        sp = e.special((ids - V).clamp(0, e.special.num_embeddings - 1))
        return torch.where(special[..., None], sp, e.embed_tokens(ids.masked_fill(special, 0)))

    def _ropes(self) -> dict[str, tuple[Tensor, Tensor]]:
        c, pos = self.config, self.pos[:, None]  # (b, 1)
        llm = rope_cos_sin(c.llm_layer, pos, 0)
        embed = llm if c.embed_layer == c.llm_layer else rope_cos_sin(c.embed_layer, pos, 0)
        return {"embed": embed, "llm": llm}

    def _step(self) -> Tensor:
        m, f, c = self.model, self.fns, self.config
        h = self._embed(self.token)  # (b, 1, hidden)
        if self.key_mask.numel():
            self.key_mask.index_fill_(1, self.slot, True)
        ropes = self._ropes()
        for i, (layer, p, state) in enumerate(zip(m.layers, self.params, self.cache.layers)):
            s = c.shape(i)
            dims = (s.num_heads, s.num_kv_heads, s.head_dim)
            if layer.kind == ATTENTION:
                q, k, v = f["qkv"](h, p, dims, s.rms_norm_eps, *m.rope_for(ropes, i))
                state.k.index_copy_(2, self.slot, k)
                state.v.index_copy_(2, self.slot, v)
                y = self.attend(q, state.k, state.v, self.key_mask, self.splits)
                h = f["out"](h, y, p["w_o"], p.get("b_o"))
            else:
                h = f["mamba"](h, p, dims, s.rms_norm_eps, c.mamba.norm_eps, state.conv, state.ssm, self.impl)
            h = f["mlp"](h, p["ffn_norm"], s.rms_norm_eps, p["w13"], p["w2"])
        logits = m.lm_head(m.norm(h))[:, 0]  # (b, V)
        self.pos.add_(1)
        self.slot.add_(1)
        return logits

    # ---- graph warm-up without side effects ----------------------------------------------
    def _prepare(self, graphs: bool, warmup: int) -> None:
        """Compile and/or capture now, so failures surface here; the cache is left as it was."""
        restore = self._restorer()
        if self.steps_left is not None:
            warmup = max(1, min(warmup, self.steps_left))  # warm-up steps write KV slots too
        try:
            if graphs:
                self.graph, self.logits = capture(self._step, warmup, restore)
            else:
                for _ in range(warmup):
                    self._step()
                restore()
        except BaseException:
            restore()
            raise

    def _restorer(self):
        """A function that puts back every tensor the warm-up steps changed (KV slots past the
        current one need no restoring: they are masked until written again)."""
        mamba = [s for s in self.cache.layers if not isinstance(s, KVState)]
        saved = [t.clone() for t in [self.pos, self.slot, self.key_mask]
                 + [x for s in mamba for x in (s.conv, s.ssm)]]

        def restore() -> None:
            live = [self.pos, self.slot, self.key_mask] + [x for s in mamba for x in (s.conv, s.ssm)]
            for dst, src in zip(live, saved):
                dst.copy_(src)
        return restore


def try_static_decoder(model: MMModel, cache: HybridCache, is_oom=lambda e: False,
                       **kw) -> tuple[StaticDecoder | None, str]:
    """A decoder, or (None, why) when the config is unsupported. When compiling or capturing fails
    (other than by running out of memory), retry without compiling, then without the graph."""
    why = static_decode_supported(model.config)
    if why:
        return None, why
    notes = []
    for drop in (None, "compile", "graphs"):
        if drop is not None:
            if not kw.get(drop):
                continue
            kw = {**kw, drop: False}
        try:
            return StaticDecoder(model, cache, **kw), "; ".join(notes)
        except Exception as e:  # noqa: BLE001 - compiler and capture failures vary; the eager step is exact
            if is_oom(e) or not (kw.get("compile") or kw.get("graphs")):
                raise
            msg = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            notes.append(f"{'compile' if kw.get('compile') else 'graph capture'} failed ({msg})")
            warnings.warn(f"decode step: {notes[-1]}; retrying without it", RuntimeWarning, stacklevel=2)
    raise AssertionError("unreachable")
