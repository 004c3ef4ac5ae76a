"""mmmamba: turn decoder-only (multimodal) Transformers into Mamba-2 and hybrid models."""

__version__ = "0.1.0"

from .hf import register_lazily as _register_with_transformers

_register_with_transformers()  # cheap: AutoConfig / AutoModelForCausalLM learn "mmmamba" when transformers loads
