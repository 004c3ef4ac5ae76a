"""HoVLE's (InternLM2's) sentencepiece tokenizer, built from its data files alone: no remote code.

A HoVLE snapshot ships ``tokenizer.model`` with ``tokenization_internlm2.py``; that Python file is
never needed. The conventions it implements are data here:

- text between added tokens is encoded by the sentencepiece model itself (its own normaliser,
  dummy prefix and byte fallback), one piece at a time: ``sp.encode(chunk)``;
- added tokens (``<|im_start|>``, ``<|im_end|>``, ``<img>``, ``<IMG_CONTEXT>``, ...) come from
  ``tokenizer_config.json`` (``added_tokens_decoder``) and ``added_tokens.json`` with their ids, and
  are never split;
- BOS (``<s>``) is prepended, no EOS is appended (``add_bos_token`` / ``add_eos_token`` override);
  unk ``<unk>``, pad ``</s>`` unless the config names others;
- decoding joins pieces with sentencepiece's own decoder; special tokens are kept verbatim unless
  skipped.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import UserError

VOCAB_FILE = "tokenizer.model"
CONFIG_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token", "add_bos_token", "add_eos_token",
               "chat_template", "model_max_length", "clean_up_tokenization_spaces")
DEFAULTS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "</s>",
            "add_bos_token": True, "add_eos_token": False, "clean_up_tokenization_spaces": False}


def is_internlm2_dir(directory: Path) -> bool:
    """A ``tokenizer.model`` whose config names InternLM2's tokenizer (class or auto_map)."""
    directory = Path(directory)
    if not (directory / VOCAB_FILE).is_file():
        return False
    cfg = _read_json(directory / "tokenizer_config.json")
    names = [str(cfg.get("tokenizer_class") or "")]
    names += [str(v) for v in _flat(cfg.get("auto_map"))]
    return any("internlm2" in n.lower() for n in names) or not (directory / "tokenizer.json").exists()


def _flat(value) -> list:
    if isinstance(value, dict):
        return [x for v in value.values() for x in _flat(v)]
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in _flat(v)]
    return [] if value is None else [value]


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path} must hold a JSON object, not {type(obj).__name__}")
    return obj


def _token_text(value) -> str | None:
    """A special token as written in the configs: a string or an AddedToken-like dict."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def added_tokens(directory: Path) -> dict[int, dict]:
    """{id: {"content", "special", "lstrip", "rstrip", "single_word", "normalized"}} from both files."""
    directory = Path(directory)
    found: dict[int, dict] = {}
    for token, idx in _read_json(directory / "added_tokens.json").items():
        if isinstance(idx, int):
            found[idx] = {"content": token, "special": True}
    decoder = _read_json(directory / "tokenizer_config.json").get("added_tokens_decoder") or {}
    if not isinstance(decoder, dict):
        raise UserError(f"{directory / 'tokenizer_config.json'}: added_tokens_decoder must be an object")
    for idx, entry in decoder.items():
        content = _token_text(entry)
        if content is None or not str(idx).isdigit():
            raise UserError(f"{directory / 'tokenizer_config.json'}: bad added_tokens_decoder entry {idx!r}")
        spec = entry if isinstance(entry, dict) else {}
        found[int(idx)] = {"content": content, "special": bool(spec.get("special", True)),
                           **{k: bool(spec.get(k, False)) for k in ("lstrip", "rstrip", "single_word", "normalized")}}
    return found


def load_internlm2_tokenizer(directory: str | Path):
    """The tokenizer of a HoVLE/InternLM2 directory, from ``tokenizer.model`` and the JSON configs."""
    from tokenizers import AddedToken

    directory = Path(directory)
    cfg = _read_json(directory / "tokenizer_config.json")
    special_map = _read_json(directory / "special_tokens_map.json")
    kwargs = dict(DEFAULTS)
    for key in CONFIG_KEYS:
        value = special_map.get(key, cfg.get(key))
        if key.endswith("_token") and key not in ("add_bos_token", "add_eos_token"):
            value = _token_text(value)
        if value is not None:
            kwargs[key] = value
    decoder = {i: AddedToken(t["content"], special=t["special"], lstrip=t.get("lstrip", False),
                             rstrip=t.get("rstrip", False), single_word=t.get("single_word", False),
                             normalized=t.get("normalized", False))
               for i, t in sorted(added_tokens(directory).items())}
    extra = [t.content for t in decoder.values() if t.special
             and t.content not in {kwargs[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")}]
    try:
        return _tokenizer_class()(vocab_file=str(directory / VOCAB_FILE), added_tokens_decoder=decoder,
                                  extra_special_tokens=extra, **kwargs)
    except (OSError, RuntimeError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"{directory / VOCAB_FILE}: not a readable sentencepiece model ({first})") from None


_CLASS = None


def _tokenizer_class():
    """Defined on first use: importing transformers is slow."""
    global _CLASS
    if _CLASS is None:
        from transformers.tokenization_utils_sentencepiece import SentencePieceBackend

        class InternLM2SentencePieceTokenizer(SentencePieceBackend):
            """InternLM2 conventions on top of the sentencepiece backend (``legacy``: the model's own
            normaliser, dummy prefix included, runs on every chunk between added tokens)."""

            vocab_files_names = {"vocab_file": VOCAB_FILE}
            model_input_names = ["input_ids", "attention_mask"]

            def __init__(self, vocab_file, add_bos_token=True, add_eos_token=False, **kwargs):
                self.add_bos_token, self.add_eos_token = add_bos_token, add_eos_token
                kwargs.setdefault("special_tokens_pattern", "none")
                super().__init__(vocab_file=vocab_file, legacy=True, add_bos_token=add_bos_token,
                                 add_eos_token=add_eos_token, **kwargs)

            def build_inputs_with_special_tokens(self, token_ids_0, token_ids_1=None):
                bos = [self.bos_token_id] if self.add_bos_token else []
                eos = [self.eos_token_id] if self.add_eos_token else []
                return bos + list(token_ids_0) + (list(token_ids_1) if token_ids_1 else []) + eos

            def get_special_tokens_mask(self, token_ids_0, token_ids_1=None, already_has_special_tokens=False):
                if already_has_special_tokens:
                    return super().get_special_tokens_mask(token_ids_0, token_ids_1, True)
                body = [0] * (len(token_ids_0) + (len(token_ids_1) if token_ids_1 else 0))
                return [1] * self.add_bos_token + body + [1] * self.add_eos_token

            def _convert_id_to_token(self, index: int) -> str:
                """Ids past the sentencepiece vocabulary (a model's padded embedding rows) read as unk."""
                return self.sp_model.IdToPiece(index) if 0 <= index < self.sp_model.get_piece_size() \
                    else str(self.unk_token)

            def convert_tokens_to_string(self, tokens: list[str]) -> str:
                """Runs of ordinary pieces through sentencepiece's decoder, added tokens verbatim."""
                out, run = [], []
                for token in tokens:
                    if token in self._added_tokens_encoder:
                        out += [self.sp_model.decode(run), token]
                        run = []
                    else:
                        run.append(token)
                return "".join(out) + self.sp_model.decode(run)

        _CLASS = InternLM2SentencePieceTokenizer
    return _CLASS
