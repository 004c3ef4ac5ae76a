"""`mmmamba bench`: prefill, decode and memory of teacher / linear / hybrid against context length,
and the fast decode path (static step, fused weights, CUDA-graph replay) behind it."""
from .cuda_graph import capture, graphs_supported
from .runner import run_bench, write_results
from .settings import BenchSettings, parse_tokens
from .static_decode import StaticDecoder, static_decode_supported

__all__ = ["BenchSettings", "StaticDecoder", "capture", "graphs_supported", "parse_tokens", "run_bench",
           "static_decode_supported", "write_results"]
