"""The model: one class for teacher, linear student and hybrid, and one cache."""
from .cache import HybridCache
from .config import ATTENTION, MAMBA, LayerShape, MambaSettings, ModelConfig, VisionSettings, preset
from .model import LayerInputs, MMModel

__all__ = ["ATTENTION", "MAMBA", "HybridCache", "LayerInputs", "LayerShape", "MambaSettings", "MMModel",
           "ModelConfig", "VisionSettings", "preset"]
