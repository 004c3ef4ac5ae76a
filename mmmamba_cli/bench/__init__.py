"""`mmmamba bench`: prefill, decode and memory of teacher / linear / hybrid against context length,
measured through the same runtime (``mmmamba_cli.runtime``) that ``generate`` and ``eval`` use."""
from .runner import run_bench, write_results
from .settings import BenchSettings, parse_tokens

__all__ = ["BenchSettings", "parse_tokens", "run_bench", "write_results"]
