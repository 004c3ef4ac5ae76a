"""Load a model and its tokenizer for evaluation, with one-line errors."""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import UserError
from ..io.load import LoadInfo, load_model
from ..io.tokenizer import load_tokenizer  # noqa: F401 - part of this module's API
from ..model.model import MMModel

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise UserError(f"unknown device {device!r}") from None


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise UserError(f"unknown dtype {dtype!r}; choose one of: {', '.join(DTYPES)}")
    return DTYPES[dtype]


def check_model_path(path: str | Path) -> Path:
    """Cheap checks before any work: the path exists, a directory holds a config.json."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"model path {path} does not exist")
    if path.is_dir() and not (path / "config.json").exists():
        raise UserError(f"{path} is not a model directory (no config.json)")
    return path


def load_for_eval(path: str | Path, device: str | None = None, dtype: str | torch.dtype | None = None,
                  ) -> tuple[MMModel, object, LoadInfo]:
    """(model in eval mode on ``device``, tokenizer, LoadInfo)."""
    path = check_model_path(path)
    model, info = load_model(path, dtype=resolve_dtype(dtype), device=resolve_device(device))
    return model.eval(), load_tokenizer(info.tokenizer_dir, path), info
