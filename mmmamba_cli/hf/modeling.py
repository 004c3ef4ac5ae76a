"""``MMMambaForCausalLM``: any mmmamba model (teacher, linear student, hybrid) as a transformers model.

The wrapper owns MMModel's children (``embed``, ``layers``, ``norm``, ``lm_head``) directly, so its
state-dict names are exactly those of our safetensors files: ``from_pretrained`` loads a model
directory written by ``mmmamba seed`` / ``distill`` with nothing missing or unexpected, and
``save_pretrained`` writes a directory our own loader reads. The MMModel that runs the forward
pass shares those children and is held outside the module tree (no ``model.`` prefix).

Generation: the cache is our :class:`HybridCache` (KV for attention layers, conv + SSM state for
Mamba layers). The first forward call of ``generate`` creates it; later calls feed only the
tokens it has not seen, one token at a time through ``MMModel.step`` (the runtime's decode step).
Left-padded batches work (pads never reach a Mamba state); beam search reorders the cache rows
(``HybridCache.reorder``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers.generation import GenerationMixin
from transformers.modeling_utils import PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from ..model.cache import HybridCache
from ..model.model import MMModel
from .configuration import MMMambaConfig

# transformers 5 names the cache ``cache``; 4.x called it ``past_key_values``
CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"
CACHE_HEADROOM = 256  # extra KV slots beyond the prompt (the KV cache grows geometrically past it)


class MMMambaForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = MMMambaConfig
    base_model_prefix = ""
    main_input_name = "input_ids"
    _no_split_modules = ["DecoderLayer"]
    _tied_weights_keys = {"lm_head.weight": "embed.embed_tokens.weight"}  # used when tie_word_embeddings
    _is_stateful = True  # Mamba states cannot be rolled back (no assisted decoding)
    _supports_sdpa = True

    def __init__(self, config: MMMambaConfig):
        super().__init__(config)
        core = MMModel(config.mmmamba)
        for name, child in core.named_children():
            self.add_module(name, child)
        object.__setattr__(self, "core", core)  # shares the children; not a registered submodule
        self.post_init()

    def _init_weights(self, module):
        """Weights come from the file; a freshly built model keeps our modules' own init (SPEC section 2)."""

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # forward builds our HybridCache instead of a DynamicCache

    def get_input_embeddings(self):
        return self.embed.embed_tokens

    def set_input_embeddings(self, value):
        self.embed.embed_tokens = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value
        self.core.lm_head = value

    def forward(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None,
                pixel_values: torch.Tensor | None = None, cache: HybridCache | None = None,
                labels: torch.LongTensor | None = None, use_cache: bool | None = None,
                logits_to_keep: int = 0, return_dict: bool | None = None, **kwargs) -> CausalLMOutputWithPast:
        """Logits (b, l, V) and, with ``use_cache`` (default off outside ``generate``), the HybridCache.

        attention_mask (b, l) covers the tokens of this call only when a cache is given (the
        wrapper's ``prepare_inputs_for_generation`` slices it so). ``labels`` are aligned with
        ``input_ids`` (-100 = ignored); the loss shifts them.
        """
        cache = cache if cache is not None else kwargs.get("past_key_values")
        if use_cache and cache is None:
            cache = self.core.new_cache(input_ids.shape[0], input_ids.shape[1] + CACHE_HEADROOM)
        keep = logits_to_keep if isinstance(logits_to_keep, int) else 0
        if (cache is not None and cache.seen and input_ids.shape[1] == 1 and pixel_values is None
                and (attention_mask is None or bool(attention_mask.all())) and not torch.is_grad_enabled()):
            self.core.fuse_for_decode()
            logits = self.core.step(input_ids, cache)[:, None]  # (b, 1, V): one decode step
        else:
            logits = self.core(input_ids, pixel_values, attention_mask, cache=cache, logits_to_keep=keep)
        loss = None
        if labels is not None and not keep:
            loss = F.cross_entropy(logits[:, :-1].float().flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
        out = CausalLMOutputWithPast(loss=loss, logits=logits, **{CACHE_FIELD: cache if use_cache else None})
        return out if return_dict is not False else out.to_tuple()

    def prepare_inputs_for_generation(self, input_ids, cache: HybridCache | None = None, attention_mask=None,
                                      pixel_values=None, use_cache: bool = True, logits_to_keep=None, **kwargs):
        """Only the tokens the cache has not seen (images only on the first call)."""
        cache = cache if cache is not None else kwargs.get("past_key_values")
        if cache is not None and cache.seen:
            input_ids = input_ids[:, cache.seen:]  # (b, new)
            pixel_values = None
        if attention_mask is not None:
            attention_mask = attention_mask[:, -input_ids.shape[1]:]
        inputs = {"input_ids": input_ids.contiguous(), "attention_mask": attention_mask,
                  "pixel_values": pixel_values, "cache": cache, "use_cache": use_cache}
        if logits_to_keep is not None:
            inputs["logits_to_keep"] = logits_to_keep
        return inputs

    @staticmethod
    def _reorder_cache(cache: HybridCache, beam_idx: torch.LongTensor) -> HybridCache:
        """Beam search: row i of the cache becomes row beam_idx[i]."""
        return cache.reorder(beam_idx)
