"""Load a model and its tokenizer for evaluation, with one-line errors."""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import UserError
from ..io.load import LoadInfo, load_model
from ..model.model import MMModel

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}
TOKENIZER_MARKERS = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json")


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


def load_tokenizer(directory: Path | None, model_path: str | Path):
    """The HF tokenizer saved next to a model (custom tokenizer code, as HoVLE's, is trusted only
    when the directory ships it)."""
    if directory is None or not any((Path(directory) / m).exists() for m in TOKENIZER_MARKERS):
        raise UserError(f"{model_path}: no tokenizer files next to the model (expected e.g. tokenizer.json)")
    from transformers import AutoTokenizer  # deferred: slow to import

    remote = any(Path(directory).glob("tokenization_*.py"))
    try:
        return AutoTokenizer.from_pretrained(str(directory), trust_remote_code=remote)
    except Exception as exc:  # noqa: BLE001 - any failure here is a broken tokenizer directory
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{model_path}: cannot load the tokenizer in {directory}: {first}") from None


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
