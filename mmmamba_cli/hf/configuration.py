"""``MMMambaConfig``: our :class:`ModelConfig` as a transformers config (model_type "mmmamba").

The JSON file is exactly what :meth:`ModelConfig.save` writes (flat, our field names), so one
directory serves both ``mmmamba_cli.io.load.load_model`` and ``AutoConfig.from_pretrained``.
The ModelConfig is kept whole in ``.mmmamba`` (never reinterpreted by transformers: our
``layer_types`` are "attention"/"mamba", which transformers would rename); the attributes that
transformers itself reads (``hidden_size``, ``num_hidden_layers``, token ids, ...) are copied out.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from transformers.configuration_utils import PretrainedConfig

from ..model.config import ModelConfig

MODEL_FIELDS = tuple(f.name for f in dataclasses.fields(ModelConfig))


class MMMambaConfig(PretrainedConfig):
    model_type = "mmmamba"

    def __init__(self, **kwargs: Any):
        ours = {k: kwargs.pop(k) for k in MODEL_FIELDS if k in kwargs}
        kwargs.pop("model_type", None)
        super().__init__(**kwargs)
        self.mmmamba = ModelConfig.from_dict(ours)
        self._mirror()

    def _mirror(self) -> None:
        """Copy the sizes and token ids transformers looks for onto the config itself."""
        c, s = self.mmmamba, self.mmmamba.llm_layer
        self.hidden_size, self.vocab_size, self.num_hidden_layers = c.hidden_size, c.output_vocab_size, c.num_layers
        self.num_attention_heads, self.num_key_value_heads, self.head_dim = s.num_heads, s.num_kv_heads, s.head_dim
        self.max_position_embeddings = s.max_position_embeddings
        self.tie_word_embeddings = c.tie_word_embeddings
        self.bos_token_id, self.eos_token_id, self.pad_token_id = c.bos_token_id, c.eos_token_id, c.pad_token_id
        self.use_cache = True

    def to_dict(self) -> dict[str, Any]:
        """Our flat ModelConfig dict (plus model_type): what config.json holds."""
        return self.mmmamba.to_dict()

    def to_diff_dict(self) -> dict[str, Any]:
        return self.to_dict()
