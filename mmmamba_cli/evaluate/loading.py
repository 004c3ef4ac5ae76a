"""Load a model and its tokenizer for evaluation, with one-line errors (homes: io/pretrained,
model/device, io/tokenizer)."""
from __future__ import annotations

from ..io.pretrained import check_model_path  # noqa: F401 - part of this module's API
from ..io.pretrained import load_pretrained as load_for_eval  # noqa: F401
from ..io.tokenizer import load_tokenizer  # noqa: F401
from ..model.device import DTYPES, resolve_device, resolve_dtype  # noqa: F401
