"""Supervised fine-tuning data from jsonl files (InternVL / VLM-SFT format and text-only kinds).

One JSON object per line, one of:

- ``{"image": path | [paths] (optional), "conversations": [{"from": "human"|"gpt"|"system", "value"}]}``
- ``{"messages": [{"role", "content"}]}``: for a text-only model (``config.vision`` None) whose
  tokenizer has a chat template, that template; otherwise the internlm2-chat template, so a
  vision model sees one format;
- ``{"text": str}``: plain LM text, encoded the tokenizer's usual way, every token supervised.

Lines are parsed here (not by ``load_dataset("json")``, which stops at the first bad line) so
each unusable record is reported by line number; kept records go into a ``datasets.Dataset``.

Image checks: at load time every image header is read (cheap: it gives the size, hence the tile
and token count used for the ``max_length`` filter, and it catches missing and non-image files).
Under ``strict=True`` every image is also fully decoded before training starts, so a corrupt file
stops loading with ``RecordError("line N: ...")``; that pass costs one decode per image. Without
``strict`` a file that passes the header check but fails to decode raises in ``__getitem__``.
Images are decoded again, lazily, in ``__getitem__``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .errors import RecordError, RecordTooLong
from .images import count_tiles, load_image, open_image, read_image_size
from .prompt import uses_chat_template
from .template import IMG_CONTEXT, check_length, encode_chat_messages, encode_conversation

if TYPE_CHECKING:  # only for annotations: keeps model/ out of the import graph
    from ..model.config import ModelConfig

MAX_REPORTED = 5  # line numbers kept per kind of skip


@dataclass
class LoadStats:
    """What ``load_sft_dataset`` read, kept and skipped (with the first few line numbers)."""

    path: str
    lines: int = 0  # non-blank lines read
    kept: int = 0
    bad: int = 0  # unreadable records skipped
    too_long: int = 0  # records over max_length skipped
    bad_lines: list[int] = field(default_factory=list)
    too_long_lines: list[int] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)  # "line N: reason" for the first bad ones

    def skip_bad(self, line: int, reason: str) -> None:
        self.bad += 1
        if len(self.bad_lines) < MAX_REPORTED:
            self.bad_lines.append(line)
            self.messages.append(f"line {line}: {reason}")

    def skip_long(self, line: int) -> None:
        self.too_long += 1
        if len(self.too_long_lines) < MAX_REPORTED:
            self.too_long_lines.append(line)

    def summary(self) -> str:
        return (f"{self.path}: kept {self.kept} of {self.lines} records; skipped {self.bad} "
                f"unreadable (lines {self.bad_lines}) and {self.too_long} over max_length "
                f"(lines {self.too_long_lines})")


class SFTDataset(torch.utils.data.Dataset):
    """Items: ``{"input_ids": (L,) long, "labels": (L,) long, "pixel_values": (k, 3, S, S) | None}``."""

    def __init__(self, rows, tokenizer, config: ModelConfig):
        self.rows = rows  # datasets.Dataset with columns line, record (JSON), num_tokens
        self.tokenizer = tokenizer
        self.config = config

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def lengths(self) -> list[int]:
        """Token count of every item (for length-grouped batching)."""
        return list(self.rows["num_tokens"]) if len(self.rows) else []

    def __getitem__(self, index: int) -> dict:
        row = self.rows[index]
        record = json.loads(row["record"])
        try:
            tiles = [load_image(p, self.config.vision) for p in record["images"]]
            enc = encode_record(record, self.tokenizer, self.config, [t.shape[0] for t in tiles])
        except RecordError as exc:
            raise RecordError(f"line {row['line']}: {exc}") from None
        return {"input_ids": torch.tensor(enc["input_ids"], dtype=torch.long),
                "labels": torch.tensor(enc["labels"], dtype=torch.long),
                "pixel_values": torch.cat(tiles) if tiles else None}


def load_sft_dataset(path: str | Path, tokenizer, config: ModelConfig,
                     image_root: str | Path | None = None, max_length: int | None = 2048,
                     strict: bool = False) -> tuple[SFTDataset, LoadStats]:
    """Read a jsonl file; relative image paths resolve against ``image_root`` (default: the file's
    folder). Unreadable records are skipped and counted (``strict``: ``RecordError("line N: ...")``);
    records over ``max_length`` tokens are skipped and counted in both modes."""
    import datasets  # deferred: slow to import

    _check_tokenizer(tokenizer, config)
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    stats, rows = LoadStats(str(path)), []
    sizes: dict[str, tuple[int, int]] = {}  # image path -> (width, height); images repeat
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            stats.lines += 1
            try:
                record = parse_record(raw, root)
                tiles = [_tiles(p, config, strict, sizes) for p in record["images"]]
                n_tokens = len(encode_record(record, tokenizer, config, tiles, max_length)["input_ids"])
            except RecordTooLong:
                stats.skip_long(number)
                continue
            except RecordError as exc:
                if strict:
                    raise RecordError(f"line {number}: {exc}") from None
                stats.skip_bad(number, str(exc))
                continue
            rows.append({"line": number, "record": json.dumps(record), "num_tokens": n_tokens})
    stats.kept = len(rows)
    return SFTDataset(datasets.Dataset.from_list(rows), tokenizer, config), stats


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


def _check_tokenizer(tokenizer, config: ModelConfig) -> None:
    if config.vision is None or config.img_context_token_id is None:
        return
    tid = tokenizer.convert_tokens_to_ids(IMG_CONTEXT)
    if tid != config.img_context_token_id:
        raise ValueError(f"tokenizer maps {IMG_CONTEXT} to {tid}, the model config expects "
                         f"img_context_token_id {config.img_context_token_id}")


def _image_paths(value, root: Path) -> list[str]:
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, str) and v for v in values):
        raise RecordError("'image' must be a path or a list of paths")
    return [str(root / v) for v in values]  # an absolute v replaces root


def _tiles(path: str, config: ModelConfig, decode: bool, sizes: dict) -> int:
    """Tile count of one image: its header is read (``decode``: the whole image) once per path."""
    if config.vision is None:
        raise RecordError("record has images but the model has no vision settings")
    if path not in sizes:
        sizes[path] = open_image(path).size if decode else read_image_size(path)
    return count_tiles(*sizes[path], config.vision)


def _as_conversations(messages) -> list[dict]:
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise RecordError("'messages' must be a list of {'role', 'content'}")
    return [{"from": m.get("role"), "value": m.get("content")} for m in messages]
