"""The one decode runtime every caller uses (``mmmamba generate``, ``eval``, lm-eval, transformers'
``generate``, ``bench``): prefill, then ``MMModel.step`` per token, captured as a CUDA graph on CUDA.

Layering: above the model (and io/data, for ``chat``), below the features that call it.
"""
from .decoder import EagerDecoder, GraphDecoder, graph_unsupported, make_decoder
from .generate import generate
from .sampling import SamplingSettings, sample_next
from .text import TextWatch, cut_at

__all__ = ["EagerDecoder", "GraphDecoder", "SamplingSettings", "TextWatch", "cut_at", "generate",
           "graph_unsupported", "make_decoder", "sample_next"]
