"""GPU test harness: lets a pure-Python mamba-ssm wheel import. Test-only; the product never does this.

``benchmarks/build_cuda_wheels.sh`` builds mamba-ssm with MAMBA_SKIP_CUDA_BUILD=TRUE: its Triton SSD
kernels are there, its compiled extension is not, yet ``mamba_ssm/__init__.py`` imports it (through
``ops/selective_scan_interface.py``) with no try/except. An empty stand-in module satisfies that
import; nothing in it is ever called by the kernels under test. ``causal_conv1d_cuda`` is left
alone on purpose: mamba-ssm imports causal-conv1d inside ``try/except ImportError`` and falls back,
whereas a stand-in would make it look installed.
"""
from __future__ import annotations

import importlib.util
import sys
import types

from mmmamba_cli.ops import kernels

COMPILED_EXTENSIONS = ("selective_scan_cuda",)  # imported unconditionally by mamba_ssm's package init


def _register_stand_ins() -> list[str]:
    added = []
    for name in COMPILED_EXTENSIONS:
        if name not in sys.modules and importlib.util.find_spec(name) is None:
            sys.modules[name] = types.ModuleType(name)
            added.append(name)
    return added


STAND_INS = _register_stand_ins()
kernels._load_kernels.cache_clear()  # forget any import attempt made before the stand-ins existed

