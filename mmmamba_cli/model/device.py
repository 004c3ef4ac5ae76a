"""Device and dtype names -> torch objects: one alias table for every command."""
from __future__ import annotations

import torch

from ..errors import UserError

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}
AUTO = ("", "auto")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """None, '' or 'auto': CUDA when it is available, else the CPU; otherwise torch's own names."""
    if device is None or device in AUTO:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise UserError(f"unknown device {device!r}") from None


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device | None = None) -> torch.dtype | None:
    """None: keep the stored dtype; 'auto': bfloat16 on CUDA, float32 elsewhere; else a DTYPES name."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype in AUTO:
        return torch.bfloat16 if resolve_device(device).type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise UserError(f"unknown dtype {dtype!r}; choose one of: {', '.join(DTYPES)}")
    return DTYPES[dtype]
