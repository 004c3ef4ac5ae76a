"""mmmamba: turn decoder-only (multimodal) Transformers into Mamba-2 and hybrid models."""

__version__ = "0.1.0"
