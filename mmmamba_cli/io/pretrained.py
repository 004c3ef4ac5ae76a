"""A model path loaded ready for use: eval mode, on a device, with its tokenizer, one-line errors."""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import UserError
from ..model.device import resolve_device, resolve_dtype
from ..model.model import MMModel
from .load import LoadInfo, load_model
from .tokenizer import load_tokenizer


def check_model_path(path: str | Path) -> Path:
    """Cheap checks before any work: the path exists, a directory holds a config.json."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"model path {path} does not exist")
    if path.is_dir() and not (path / "config.json").exists():
        raise UserError(f"{path} is not a model directory (no config.json)")
    return path


def load_pretrained(path: str | Path, device: str | None = None, dtype: str | torch.dtype | None = None,
                    ) -> tuple[MMModel, object, LoadInfo]:
    """(model in eval mode on ``device``, tokenizer, LoadInfo)."""
    path = check_model_path(path)
    where = resolve_device(device)
    model, info = load_model(path, dtype=resolve_dtype(dtype, where), device=where)
    return model.eval(), load_tokenizer(info.tokenizer_dir, path), info
