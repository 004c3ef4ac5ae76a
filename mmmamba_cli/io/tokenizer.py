"""The tokenizer saved next to a model, loaded one way for every command.

No Python file from a model directory runs unless the caller opts in: ``trust_remote_code=True``,
``with allow_remote_code(True):`` (what ``--trust-remote-code`` does) or the environment variable
``MMMAMBA_TRUST_REMOTE_CODE=1`` (for entries without a command line, e.g. the lm-eval model).
HoVLE's sentencepiece tokenizer loads natively (``sp_tokenizer``), so it never needs the opt-in.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
from pathlib import Path

from ..errors import UserError
from .sp_tokenizer import is_internlm2_dir, load_internlm2_tokenizer

TOKENIZER_MARKERS = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json")
REMOTE_CODE_ENV = "MMMAMBA_TRUST_REMOTE_CODE"
_ALLOW: contextvars.ContextVar[bool | None] = contextvars.ContextVar("mmmamba_remote_code", default=None)


def remote_code_allowed(explicit: bool | None = None) -> bool:
    """``explicit`` if given, else the innermost ``allow_remote_code`` block, else the environment."""
    if explicit is not None:
        return bool(explicit)
    if _ALLOW.get() is not None:
        return bool(_ALLOW.get())
    return os.environ.get(REMOTE_CODE_ENV, "").strip().lower() in ("1", "true", "yes")


@contextlib.contextmanager
def allow_remote_code(flag: bool):
    """Inside the block, tokenizer code shipped in a model directory may run iff ``flag``."""
    token = _ALLOW.set(bool(flag))
    try:
        yield
    finally:
        _ALLOW.reset(token)


def code_files(directory: Path) -> list[str]:
    """Python files a model directory ships (what ``auto_map`` would import)."""
    return sorted(p.name for p in Path(directory).glob("*.py"))


def load_tokenizer(directory: Path | None, model_path: str | Path | None = None,
                   trust_remote_code: bool | None = None):
    """The tokenizer in ``directory``. Missing or broken files, or a tokenizer that only works with
    code the user did not allow, raise a one-line UserError."""
    model_path = model_path if model_path is not None else directory
    if directory is None or not any((Path(directory) / m).exists() for m in TOKENIZER_MARKERS):
        raise UserError(f"{model_path}: no tokenizer files next to the model (expected e.g. tokenizer.json)")
    directory = Path(directory)
    trust = remote_code_allowed(trust_remote_code)
    if not (trust and code_files(directory)) and is_internlm2_dir(directory):
        return load_internlm2_tokenizer(directory)
    from transformers import AutoTokenizer  # deferred: slow to import
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its notes about config.json model types are noise here
    try:
        return AutoTokenizer.from_pretrained(str(directory), trust_remote_code=trust)
    except Exception as exc:  # noqa: BLE001 - any failure here is a broken tokenizer directory
        if not trust and ("trust_remote_code" in str(exc) or code_files(directory)):
            raise UserError(f"{model_path}: the tokenizer in {directory} only loads by running its Python code "
                            f"({', '.join(code_files(directory)) or 'auto_map'}); pass --trust-remote-code "
                            f"(or set {REMOTE_CODE_ENV}=1) if you trust it") from None
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{model_path}: cannot load the tokenizer in {directory}: {first}") from None
    finally:
        hf_logging.set_verbosity(level)
