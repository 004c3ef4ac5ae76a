"""The Hugging Face tokenizer saved next to a model, loaded one way for every command."""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError

TOKENIZER_MARKERS = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json")


def load_tokenizer(directory: Path | None, model_path: str | Path | None = None):
    """The tokenizer in ``directory``; custom tokenizer code (HoVLE's sentencepiece one) is trusted
    only when the directory ships it. Missing or broken files raise a one-line UserError."""
    model_path = model_path if model_path is not None else directory
    if directory is None or not any((Path(directory) / m).exists() for m in TOKENIZER_MARKERS):
        raise UserError(f"{model_path}: no tokenizer files next to the model (expected e.g. tokenizer.json)")
    from transformers import AutoTokenizer  # deferred: slow to import

    remote = any(Path(directory).glob("tokenization_*.py"))
    try:
        return AutoTokenizer.from_pretrained(str(directory), trust_remote_code=remote)
    except Exception as exc:  # noqa: BLE001 - any failure here is a broken tokenizer directory
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{model_path}: cannot load the tokenizer in {directory}: {first}") from None
