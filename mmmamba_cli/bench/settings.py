"""What a benchmark run measures, validated in one place (all problems reported at once)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import UserError
from ..model.config import PRESET_NAMES

MODEL_KINDS = ("teacher", "linear", "hybrid")
TEACHER_IMPLS = ("sdpa", "eager")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SWITCH = ("auto", "on", "off")
DEFAULT_TOKENS = (1024, 2048, 4096, 8192, 16384, 32768)


@dataclass
class BenchSettings:
    """One sweep over models x context lengths, plus the paper's fixed-prompt test."""

    tokens: list[int] = field(default_factory=lambda: list(DEFAULT_TOKENS))
    """Context lengths (prompt tokens before the measured decode steps)."""
    models: list[str] = field(default_factory=lambda: list(MODEL_KINDS))
    size: str = "tiny"
    """Shape preset for randomly initialised models (speed does not depend on the weights)."""
    model_dir: Path | None = None
    """Take the shapes (and, for its own kind, the weights) from this model directory instead."""
    dtype: str = "auto"  # auto: bfloat16 on CUDA, float32 on CPU
    device: str = "auto"  # auto: cuda when available
    teacher_impl: str = "sdpa"
    """sdpa: fused attention, grouped KV read once; eager: KV repeated per head, fp32 softmax
    (the paper's teacher). Prefill always uses SDPA: an eager prefill needs (l x l) scores."""
    decode_steps: int = 32  # timed decode steps per cell (median reported)
    warmup_steps: int = 4  # untimed decode steps first
    repeats: int = 3  # timed prefills per cell (median reported)
    prefill_budget_s: float = 30.0  # stop repeating a cell's prefill once this much time is spent
    fixed_prompt: bool = True  # the paper's one-image, 256-new-token test
    new_tokens: int = 256
    graphs: str = "auto"  # CUDA-graph replay of the decode step (auto: on CUDA)
    impl: str = "auto"  # Mamba scan implementation: auto | torch | kernel
    threads: int | None = None  # torch CPU threads (None: 1 on a CPU device, torch's default on CUDA)
    bandwidth: float | None = None  # memory bandwidth in bytes/s (None: from the device name)
    seed: int = 0

    def validate(self) -> "BenchSettings":
        errors = []
        if not self.tokens:
            errors.append("--tokens: give at least one context length")
        if any(t < 16 for t in self.tokens):
            errors.append(f"--tokens: lengths must be >= 16, got {min(self.tokens)}")
        if len(set(self.tokens)) != len(self.tokens):
            errors.append("--tokens: duplicate context length")
        bad = [m for m in self.models if m not in MODEL_KINDS]
        if bad or not self.models:
            errors.append(f"--models: unknown {bad} (choose from {', '.join(MODEL_KINDS)})" if bad
                          else "--models: give at least one model")
        if self.model_dir is None and self.size not in PRESET_NAMES:
            errors.append(f"--size {self.size!r}: choose one of {', '.join(PRESET_NAMES)}")
        if self.model_dir is not None and not Path(self.model_dir).exists():
            errors.append(f"--model {self.model_dir}: no such directory")
        if self.dtype != "auto" and self.dtype not in DTYPES:
            errors.append(f"--dtype {self.dtype!r}: choose auto or one of {', '.join(DTYPES)}")
        if self.teacher_impl not in TEACHER_IMPLS:
            errors.append(f"--teacher-impl {self.teacher_impl!r}: choose {' or '.join(TEACHER_IMPLS)}")
        if self.graphs not in SWITCH:
            errors.append(f"--graphs {self.graphs!r}: choose auto, on or off")
        if self.impl not in ("auto", "torch", "kernel"):
            errors.append(f"--impl {self.impl!r}: choose auto, torch or kernel")
        if self.decode_steps < 1 or self.repeats < 1 or self.new_tokens < 1 or self.warmup_steps < 0:
            errors.append("--steps, --repeats and --new-tokens must be >= 1 (warm-up >= 0)")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            errors.append(f"--device {self.device!r}: choose auto, cpu or cuda[:N]")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            errors.append(f"--device {self.device}: CUDA is not available on this machine")
        if errors:
            raise UserError("; ".join(errors))
        self.tokens = sorted(self.tokens)
        return self

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def resolved_dtype(self) -> torch.dtype:
        if self.dtype == "auto":
            return torch.bfloat16 if self.resolved_device().type == "cuda" else torch.float32
        return DTYPES[self.dtype]

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["model_dir"] = str(self.model_dir) if self.model_dir else None
        return d


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
