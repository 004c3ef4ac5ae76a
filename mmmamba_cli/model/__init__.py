"""The model: one class for teacher, linear student and hybrid, and one cache."""
from .cache import HybridCache
from .config import ATTENTION, MAMBA, LayerShape, MambaSettings, ModelConfig, VisionSettings, preset
from .generate import SamplingSettings, generate
from .model import MMModel

__all__ = ["ATTENTION", "MAMBA", "HybridCache", "LayerShape", "MambaSettings", "MMModel", "ModelConfig",
           "SamplingSettings", "VisionSettings", "generate", "preset"]
