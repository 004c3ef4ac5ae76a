"""Model configuration: one dataclass for teacher, linear student and hybrid.

A model is a stack of ``num_layers`` *global* layers. For HoVLE the first ``num_embed_layers``
belong to the holistic-embedding module (image tokens are written into the sequence before
them) and the rest to the language model; for a text-only (Llama-family) teacher
``num_embed_layers`` is 0. ``layer_types[i]`` is ``"attention"`` or ``"mamba"`` for global layer i.
"""
from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ATTENTION = "attention"
MAMBA = "mamba"
LAYER_TYPES = (ATTENTION, MAMBA)


@dataclass
class LayerShape:
    """Sizes of one decoder layer (the embedding module and the LLM may differ)."""

    num_heads: int = 16
    num_kv_heads: int = 8
    head_dim: int = 128
    intermediate_size: int = 8192
    rms_norm_eps: float = 1e-5
    rope_theta: float = 1e6
    rope_scaling: dict | None = None
    max_position_embeddings: int = 32768
    attention_bias: bool = False  # bias on q/k/v (and on o unless o_bias says otherwise)
    o_bias: bool | None = None  # bias on the output projection; None: same as attention_bias (Qwen2: False)

    @property
    def out_bias(self) -> bool:
        return self.attention_bias if self.o_bias is None else self.o_bias

    @property
    def groups(self) -> int:
        return self.num_heads // self.num_kv_heads


@dataclass
class MambaSettings:
    """Mamba-2 mixer settings (SPEC section 2)."""

    d_conv: int = 2
    chunk_size: int = 128
    dt_min: float = 1e-3
    dt_max: float = 0.1
    dt_init_floor: float = 1e-3
    A_init: float = 1.0  # A_log is filled with this value, so A = -exp(A_init)
    gate_gain: float = 2 ** -2.5
    norm_eps: float = 1e-5
    impl: str = "auto"  # auto | torch | kernel; a runtime choice (load_model(impl=)), never saved


@dataclass
class VisionSettings:
    image_size: int = 448
    patch_size: int = 14
    num_channels: int = 3
    downsample_ratio: float = 0.5
    max_tiles: int = 12
    use_thumbnail: bool = True

    @property
    def tokens_per_tile(self) -> int:
        grid = self.image_size // self.patch_size
        return int(grid * grid * self.downsample_ratio ** 2)


# set when a model is loaded, not part of it: older config.json files that hold them still load
RUNTIME_FIELDS = (("mamba", "impl"),)


@dataclass
class ModelConfig:
    hidden_size: int = 2048
    vocab_size: int = 92553  # rows of the text table: ids below it are text, ids >= it special
    num_special_embeddings: int = 0  # rows of the separate special-token table (ids >= vocab_size)
    head_vocab_size: int | None = None  # rows of the output head; None: vocab_size (HoVLE: llm vocab_size)
    num_embed_layers: int = 8
    num_llm_layers: int = 24
    embed_layer: LayerShape = field(default_factory=LayerShape)
    llm_layer: LayerShape = field(default_factory=LayerShape)
    rms_norm_eps: float = 1e-5  # final norm
    vision: VisionSettings | None = field(default_factory=VisionSettings)
    img_context_token_id: int | None = 92546
    bos_token_id: int | None = 1
    eos_token_id: int | None = 92542
    pad_token_id: int | None = 2
    template: str = "internlm2-chat"
    system_prompt: str = ""
    family: str = "hovle"  # hovle | llama
    tie_word_embeddings: bool = False
    layer_types: list[str] = field(default_factory=list)
    mamba: MambaSettings = field(default_factory=MambaSettings)
    source: dict = field(default_factory=dict)  # provenance: teacher path, seeding info

    def __post_init__(self):
        if not self.layer_types:
            self.layer_types = [ATTENTION] * self.num_layers
        self.validate()

    @property
    def num_layers(self) -> int:
        return self.num_embed_layers + self.num_llm_layers

    def shape(self, layer: int) -> LayerShape:
        return self.embed_layer if layer < self.num_embed_layers else self.llm_layer

    @property
    def output_vocab_size(self) -> int:
        """Rows of the output head (HoVLE: the LLM's vocab_size, may exceed the text table)."""
        return self.vocab_size if self.head_vocab_size is None else self.head_vocab_size

    @property
    def attention_layers(self) -> list[int]:
        return [i for i, t in enumerate(self.layer_types) if t == ATTENTION]

    @property
    def mamba_layers(self) -> list[int]:
        return [i for i, t in enumerate(self.layer_types) if t == MAMBA]

    @property
    def kind(self) -> str:
        if not self.mamba_layers:
            return "teacher"
        return "linear" if not self.attention_layers else "hybrid"

    def validate(self) -> None:
        errors = []
        if len(self.layer_types) != self.num_layers:
            errors.append(f"layer_types has {len(self.layer_types)} entries, expected {self.num_layers}")
        bad = sorted({t for t in self.layer_types if t not in LAYER_TYPES})
        if bad:
            errors.append(f"unknown layer type(s) {bad}; expected one of {list(LAYER_TYPES)}")
        for name, s in (("embed_layer", self.embed_layer), ("llm_layer", self.llm_layer)):
            if s.num_heads % s.num_kv_heads:
                errors.append(f"{name}: num_heads {s.num_heads} not divisible by num_kv_heads {s.num_kv_heads}")
        if self.tie_word_embeddings and self.output_vocab_size != self.vocab_size:
            errors.append(f"tied embeddings need head_vocab_size {self.output_vocab_size} == vocab_size "
                          f"{self.vocab_size}")
        if self.vision is not None and self.num_embed_layers and self.img_context_token_id is None:
            errors.append("a vision model needs img_context_token_id")
        if errors:
            raise ValueError("invalid model config: " + "; ".join(errors))

    # ---- serialisation ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """What config.json holds: the model itself, not the runtime choices of one session."""
        d = dataclasses.asdict(self)
        for section, key in RUNTIME_FIELDS:
            d[section].pop(key)
        d["model_type"] = "mmmamba"
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        d = dict(d)
        d.pop("model_type", None)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown model config key(s): {', '.join(unknown)}")
        for key, sub in (("embed_layer", LayerShape), ("llm_layer", LayerShape),
                         ("mamba", MambaSettings), ("vision", VisionSettings)):
            if isinstance(d.get(key), dict):
                d[key] = sub(**{k: v for k, v in d[key].items() if (key, k) not in RUNTIME_FIELDS})
        return cls(**d)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "ModelConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def with_layer_types(self, layer_types: list[str]) -> "ModelConfig":
        return dataclasses.replace(self, layer_types=list(layer_types))


_INTERNLM_1_8B = dict(num_heads=16, num_kv_heads=8, head_dim=128, intermediate_size=8192, rope_theta=1e6,
                      max_position_embeddings=32768)
_TINY_LAYER = dict(num_heads=4, num_kv_heads=2, head_dim=16, intermediate_size=128, rope_theta=10000.0,
                   max_position_embeddings=4096)

# named size presets (ModelConfig.from_dict fields): the real HoVLE-2.6B shapes, and a tiny one for tests
PRESETS: dict[str, dict[str, Any]] = {
    "hovle-2.6b": dict(hidden_size=2048, vocab_size=92553, num_embed_layers=8, num_llm_layers=24,
                       embed_layer=_INTERNLM_1_8B, llm_layer=_INTERNLM_1_8B, vision={}),
    "tiny": dict(hidden_size=64, vocab_size=128, num_special_embeddings=0, num_embed_layers=2, num_llm_layers=2,
                 embed_layer=_TINY_LAYER, llm_layer=_TINY_LAYER,
                 vision=dict(image_size=32, patch_size=8, max_tiles=1, use_thumbnail=False),
                 img_context_token_id=5, bos_token_id=1, eos_token_id=2, pad_token_id=0),
}


def preset(name: str) -> ModelConfig:
    """A fresh ModelConfig for one of PRESETS."""
    if name not in PRESETS:
        raise ValueError(f"unknown size preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return ModelConfig.from_dict(copy.deepcopy(PRESETS[name]))
