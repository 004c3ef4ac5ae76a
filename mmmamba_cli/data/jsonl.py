"""Supervised fine-tuning records (InternVL / VLM-SFT format and text-only kinds), one at a time.

One JSON object per line, one of:

- ``{"image": path | [paths] (optional), "conversations": [{"from": "human"|"gpt"|"system", "value"}]}``
- ``{"messages": [{"role", "content"}]}``: for a text-only model (``config.vision`` None) whose
  tokenizer has a chat template, that template; otherwise the internlm2-chat template, so a
  vision model sees one format;
- ``{"text": str}``: plain LM text, encoded the tokenizer's usual way, every token supervised.

Lines are parsed here (not by ``load_dataset("json")``, which stops at the first bad line) so
each unusable record is reported by line number. ``index`` turns a whole file into a dataset
on disk (``load_sft_dataset``); ``encode_record`` is the one-record reference it must match.
Image checks while indexing: every image header is read (it gives the size, hence the tile and
token count, and catches missing and non-image files); ``strict`` decodes every image fully.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import RecordError
from .prompt import uses_chat_template
from .template import check_length, encode_chat_messages, encode_conversation

if TYPE_CHECKING:  # only for annotations: keeps model/ out of the import graph
    from ..model.config import ModelConfig


def parse_record(raw: bytes | str, image_root: Path) -> dict:
    """One jsonl line -> ``{"kind", "images": [absolute paths], kind's payload}``."""
    try:
        obj = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RecordError(f"bad JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise RecordError("not a JSON object")
    images = _image_paths(obj.get("image"), image_root)
    for kind in ("conversations", "messages", "text"):
        if kind in obj:
            if kind == "text" and (images or not isinstance(obj["text"], str) or not obj["text"]):
                raise RecordError("'text' must be a non-empty string, with no image")
            return {"kind": kind, "images": images, kind: obj[kind]}
    raise RecordError("no 'conversations', 'messages' or 'text' field")


def encode_record(record: dict, tokenizer, config: ModelConfig, tiles_per_image: list[int],
                  max_length: int | None = None) -> dict[str, list[int]]:
    """A parsed record -> ``{"input_ids", "labels"}`` (see ``template``)."""
    if record["kind"] == "text":
        ids = tokenizer.encode(record["text"])  # the tokenizer's own BOS/EOS convention
        check_length(len(ids), max_length)
        return {"input_ids": ids, "labels": list(ids)}
    if record["images"] and config.vision is None:
        raise RecordError("record has images but the model has no vision settings")
    tokens_per_tile = config.vision.tokens_per_tile if config.vision else 0
    conversations = record.get("conversations")
    if record["kind"] == "messages":
        if uses_chat_template(tokenizer, config):  # the one rule of data/prompt.py
            return encode_chat_messages(tokenizer, record["messages"], max_length)
        conversations = _as_conversations(record["messages"])
    return encode_conversation(tokenizer, conversations, tiles_per_image, tokens_per_tile,
                               config.system_prompt, max_length)


def _image_paths(value, root: Path) -> list[str]:
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, str) and v for v in values):
        raise RecordError("'image' must be a path or a list of paths")
    return [os.path.join(root, v) for v in values]  # an absolute v replaces root


def _as_conversations(messages) -> list[dict]:
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise RecordError("'messages' must be a list of {'role', 'content'}")
    return [{"from": m.get("role"), "value": m.get("content")} for m in messages]
