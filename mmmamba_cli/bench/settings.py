"""What a benchmark run measures: a typed recipe in sections (``models``, ``sweep``,
``fixed_prompt``, ``runtime``), built by :func:`mmmamba_cli.recipe.build` like every other
command's recipe, so ``key=value`` overrides (``sweep.tokens=1k,4k runtime.graphs=off``) and
YAML files work and every problem is reported at once."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, Union

import torch

from ..errors import UserError
from ..model.config import PRESETS
from ..model.device import resolve_device, resolve_dtype
from ..recipe import build, merge, parse_overrides

MODEL_KINDS = ("teacher", "linear", "hybrid")
DEFAULT_TOKENS = (1024, 2048, 4096, 8192, 16384, 32768)


@dataclass
class ModelsSection:
    kinds: Union[list[str], str] = field(default_factory=lambda: list(MODEL_KINDS))
    """Models to compare: teacher, linear, hybrid (hybrid keeps attention in every 4th layer from 0)."""
    size: str = "tiny"
    """Shape preset for randomly initialised models (speed does not depend on the weights)."""
    model_dir: Optional[str] = None
    """Take the shapes (and, for its own kind, the weights) from this model directory instead."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """auto: bfloat16 on CUDA, float32 on CPU."""
    device: str = "auto"
    """auto (cuda when available) | cpu | cuda[:N]."""
    teacher_impl: Literal["sdpa", "eager"] = "sdpa"
    """sdpa: fused attention, grouped KV read once; eager: KV repeated per head, fp32 softmax
    (the paper's teacher). Prefill always uses SDPA: an eager prefill needs (l x l) scores."""
    impl: Literal["auto", "torch", "kernel"] = "auto"
    """Mamba scan implementation."""


@dataclass
class SweepSection:
    tokens: Union[list[int], str] = field(default_factory=lambda: list(DEFAULT_TOKENS))
    """Context lengths (prompt tokens before the measured decode steps); '1k,4k' works too."""
    decode_steps: int = 32
    """Timed decode steps per cell (median reported)."""
    warmup_steps: int = 4
    """Untimed decode steps first."""
    repeats: int = 3
    """Timed prefills per cell (median reported)."""
    prefill_budget_s: float = 30.0
    """Stop repeating a cell's prefill once this much time is spent."""


@dataclass
class FixedPromptSection:
    enabled: bool = True
    """The paper's one-image, 'Describe the image specifically' test through the runtime's generate."""
    new_tokens: int = 256


@dataclass
class RuntimeSection:
    graphs: Union[Literal["auto", "on", "off"], bool] = "auto"
    """CUDA-graph replay of the decode step: auto (on CUDA) | on | off (YAML's true / false too)."""
    threads: Optional[int] = None
    """torch CPU threads (None: 1 on a CPU device, torch's default on CUDA)."""
    bandwidth: Optional[float] = None
    """Memory bandwidth in bytes/s for the decode floor (None: from the GPU's name)."""


@dataclass
class BenchSettings:
    """One sweep over models x context lengths, plus the paper's fixed-prompt test."""

    models: ModelsSection = field(default_factory=ModelsSection)
    sweep: SweepSection = field(default_factory=SweepSection)
    fixed_prompt: FixedPromptSection = field(default_factory=FixedPromptSection)
    runtime: RuntimeSection = field(default_factory=RuntimeSection)
    seed: int = 0

    def check(self) -> list[str]:
        """Semantic problems (types are the schema's); also turns '1k,4k' / 'a,b' strings into lists."""
        errors, m, s = [], self.models, self.sweep
        if isinstance(s.tokens, str):
            try:
                s.tokens = parse_tokens(s.tokens)
            except UserError as e:
                errors.append(str(e))
                s.tokens = []
        if isinstance(m.kinds, str):
            m.kinds = parse_models(m.kinds)
        if isinstance(self.runtime.graphs, bool):  # YAML reads on / off as booleans
            self.runtime.graphs = "on" if self.runtime.graphs else "off"
        if not s.tokens:
            errors.append("sweep.tokens: give at least one context length")
        elif any(t < 16 for t in s.tokens):
            errors.append(f"sweep.tokens: lengths must be >= 16, got {min(s.tokens)}")
        if len(set(s.tokens)) != len(s.tokens):
            errors.append("sweep.tokens: duplicate context length")
        bad = [k for k in m.kinds if k not in MODEL_KINDS]
        if bad or not m.kinds:
            errors.append(f"models.kinds: unknown {bad} (choose from {', '.join(MODEL_KINDS)})" if bad
                          else "models.kinds: give at least one model")
        if m.model_dir is None and m.size not in PRESETS:
            errors.append(f"models.size {m.size!r}: choose one of {', '.join(PRESETS)}")
        if m.model_dir is not None and not Path(m.model_dir).exists():
            errors.append(f"models.model_dir {m.model_dir}: no such directory")
        if s.decode_steps < 1 or s.repeats < 1 or self.fixed_prompt.new_tokens < 1 or s.warmup_steps < 0:
            errors.append("sweep.decode_steps, sweep.repeats and fixed_prompt.new_tokens must be >= 1 "
                          "(sweep.warmup_steps >= 0)")
        if m.device not in ("auto", "cpu") and not m.device.startswith("cuda"):
            errors.append(f"models.device {m.device!r}: choose auto, cpu or cuda[:N]")
        if m.device.startswith("cuda") and not torch.cuda.is_available():
            errors.append(f"models.device {m.device}: CUDA is not available on this machine")
        s.tokens = sorted(s.tokens)
        return errors

    def resolved_device(self) -> torch.device:
        return resolve_device(self.models.device)

    def resolved_dtype(self) -> torch.dtype:
        return resolve_dtype(self.models.dtype, self.resolved_device())

    @property
    def model_dir(self) -> Path | None:
        return Path(self.models.model_dir) if self.models.model_dir else None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def bench_settings(values: dict | None = None, overrides: list[str] | dict | None = None) -> BenchSettings:
    """Schema defaults <- ``values`` (nested, e.g. from the command's options) <- ``key=value``
    overrides, validated: every problem in one UserError."""
    return build(BenchSettings, merge(values or {}, parse_overrides(overrides)), "bench settings")


def parse_tokens(spec: str) -> list[int]:
    """'1k,4k,103000,128k' -> [1024, 4096, 103000, 131072] (k = 1024, as context lengths go)."""
    out = []
    for part in (p.strip().lower() for p in spec.split(",")):
        if not part:
            continue
        scale = 1024 if part.endswith("k") else 1
        try:
            value = float(part[:-1] if scale > 1 else part) * scale
        except ValueError:
            raise UserError(f"--tokens: {part!r} is not a length (e.g. 4k, 103000)") from None
        if value != int(value) or value <= 0:
            raise UserError(f"--tokens: {part!r} is not a positive whole number of tokens")
        out.append(int(value))
    if not out:
        raise UserError(f"--tokens {spec!r}: no length given")
    return out


def parse_models(spec: str) -> list[str]:
    return [p.strip() for p in spec.split(",") if p.strip()]
