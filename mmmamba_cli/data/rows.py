"""Raw rows -> index rows, a batch at a time (the function ``datasets.map`` runs in each worker).

An index row keeps a record in compact form: ``ids`` are the token ids with each image block's
run of ``<IMG_CONTEXT>`` written as one negative number ``-n`` (n context tokens), ``spans`` the
flat ``[start, end, ...]`` of supervised positions in ``ids``, ``images`` / ``tiles`` the image
paths and their tile counts, ``num_tokens`` the expanded length. ``expand`` restores the
``input_ids`` / ``labels`` that ``jsonl.encode_record`` gives for the same record.

All text pieces of a batch are tokenized in one call (the Rust tokenizer, when it is a fast
one), which is what makes building fast; the template itself is ``template.conversation_parts``.
Status: OK, BAD (unreadable, ``message`` says why) or TOO_LONG.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import RecordError, RecordTooLong
from .images import count_tiles, open_image, read_image_size
from .prompt import uses_chat_template
from .sources import TEXT
from .template import (IGNORE_INDEX, IMG_CONTEXT, IMG_END, IMG_START, _bos, _special_id,
                       check_length, conversation_parts)

OK, BAD, TOO_LONG = 0, 1, 2
COLUMNS = ("line", "source", "status", "message", "ids", "spans", "images", "tiles", "num_tokens")
_SIZES: dict[tuple[str, bool], tuple[int, int]] = {}  # (path, decoded?) -> (width, height), per process


def features():
    import datasets  # deferred: slow to import

    seq = datasets.Sequence
    return datasets.Features({
        "line": datasets.Value("int64"), "source": datasets.Value("int32"), "status": datasets.Value("int8"),
        "message": datasets.Value("string"), "ids": seq(datasets.Value("int32")),
        "spans": seq(datasets.Value("int32")), "images": seq(datasets.Value("string")),
        "tiles": seq(datasets.Value("int32")), "num_tokens": datasets.Value("int32")})


def encode_rows(batch: dict, *, tokenizer, config, roots: list[str], max_length: int | None,
                long_text: str, strict: bool) -> dict[str, list]:
    """One ``datasets.map(batched=True)`` step: raw rows in, index rows out (text may split into several)."""
    from .jsonl import encode_record, parse_record

    order, texts, docs = [], [], []  # per record in order: a finished row or a plan; text pieces; documents
    for raw, line, source, kind in zip(batch["raw"], batch["line"], batch["source"], batch["kind"]):
        base = {"line": line, "source": source}
        try:
            record = {"kind": "text", "images": [], "text": raw.decode("utf-8", "replace")} if kind == TEXT \
                else parse_record(raw, Path(roots[source]))
            tiles = [_tiles(p, config, strict) for p in record["images"]]
            if record["kind"] == "text":
                order.append(("doc", base, len(docs)))
                docs.append(record["text"])
            elif record["kind"] == "messages" and uses_chat_template(tokenizer, config):
                enc = encode_record(record, tokenizer, config, tiles, max_length)  # the tokenizer's own template
                order.append(("row", base, dict(status=OK, ids=enc["input_ids"], spans=_spans(enc["labels"]),
                                                num_tokens=len(enc["input_ids"]))))
            else:
                parts = conversation_parts(_conversations(record), len(tiles), config.system_prompt)
                if tiles and config.vision is None:
                    raise RecordError("record has images but the model has no vision settings")
                order.append(("plan", base, (record["images"], tiles, parts, len(texts))))
                texts += [p for p, _ in parts if isinstance(p, str)]
        except RecordTooLong:
            order.append(("row", base, dict(status=TOO_LONG)))
        except RecordError as exc:
            order.append(("row", base, dict(status=BAD, message=str(exc))))
    pieces = _tokenize(tokenizer, texts, special=False)
    doc_ids = _tokenize(tokenizer, docs, special=True)
    out = {k: [] for k in COLUMNS}
    for what, base, item in order:
        if what == "row":
            _emit(out, base, **item)
        elif what == "plan":
            _assemble(out, base, item, pieces, tokenizer, config, max_length)
        else:
            _windows(out, base, doc_ids[item], max_length, long_text)
    return out


def expand(ids: np.ndarray, spans: np.ndarray, context_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Compact ``ids`` / ``spans`` -> (input_ids, labels), int64."""
    ids = ids.astype(np.int64)
    counts = np.where(ids < 0, -ids, 1)  # an image run of n tokens, else one token
    input_ids = np.repeat(np.where(ids < 0, context_id, ids), counts)
    supervised = np.zeros(len(ids), dtype=bool)
    for start, end in zip(spans[0::2], spans[1::2]):
        supervised[start:end] = True
    labels = np.where(np.repeat(supervised, counts), input_ids, IGNORE_INDEX)
    return input_ids, labels


# ---- internals ------------------------------------------------------------------------------
def _emit(out, base, status, ids=(), spans=(), images=(), tiles=(), num_tokens=0, message=""):
    """Append one index row."""
    for key, value in (*base.items(), ("status", status), ("message", message), ("ids", list(ids)),
                       ("spans", list(spans)), ("images", list(images)), ("tiles", list(tiles)),
                       ("num_tokens", num_tokens)):
        out[key].append(value)


def _assemble(out, base, plan, pieces, tokenizer, config, max_length) -> None:
    images, tiles, parts, first = plan
    tpt = config.vision.tokens_per_tile if config.vision else 0
    ids, spans, k = list(_bos(tokenizer)), [], first
    extra = 0  # tokens beyond len(ids): each image run counts n - 1 more
    for part, train in parts:
        if isinstance(part, int):
            n = tiles[part] * tpt
            ids += [_special_id(tokenizer, IMG_START), -n, _special_id(tokenizer, IMG_END)] if n else \
                [_special_id(tokenizer, IMG_START), _special_id(tokenizer, IMG_END)]
            extra += n - 1 if n else 0
            continue
        piece = pieces[k]
        k += 1
        if train and piece:
            spans += [len(ids), len(ids) + len(piece)]
        ids += piece
    total = len(ids) + extra
    try:
        check_length(total, max_length)
    except RecordTooLong:
        _emit(out, base, TOO_LONG)
        return
    _emit(out, base, OK, ids, spans, images, tiles, total)


def _windows(out, base, ids: list[int], max_length: int | None, long_text: str) -> None:
    """Plain text: one row, or ``max_length`` windows of it (``long_text="split"``)."""
    if max_length is None or len(ids) <= max_length:
        _emit(out, base, OK, ids, [0, len(ids)], num_tokens=len(ids))
    elif long_text == "drop":
        _emit(out, base, TOO_LONG)
    else:
        for s in range(0, len(ids), max_length):
            window = ids[s:s + max_length]
            _emit(out, base, OK, window, [0, len(window)], num_tokens=len(window))


def _tokenize(tokenizer, texts: list[str], special: bool) -> list[list[int]]:
    if not texts:
        return []
    backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
    unique = list(dict.fromkeys(texts))  # template pieces repeat in every record: encode each once
    if backend is not None:  # what tokenizer.encode(t, add_special_tokens=special) runs, per text
        encode = getattr(backend, "encode_batch_fast", backend.encode_batch)  # _fast: no offsets
        ids = [e.ids for e in encode(unique, add_special_tokens=special)]
    else:
        ids = [tokenizer.encode(t, add_special_tokens=special) if t else [] for t in unique]
    by_text = dict(zip(unique, ids))
    return [by_text[t] for t in texts]


def _spans(labels: list[int]) -> list[int]:
    spans, inside = [], False
    for i, label in enumerate([*labels, IGNORE_INDEX]):
        if (label != IGNORE_INDEX) != inside:
            spans.append(i)
            inside = not inside
    return spans


def _conversations(record: dict):
    if record["kind"] == "conversations":
        return record["conversations"]
    from .jsonl import _as_conversations

    return _as_conversations(record["messages"])


def _tiles(path: str, config, decode: bool) -> int:
    """Tile count of one image: its header is read (``decode``: the whole image) once per path and worker."""
    if config.vision is None:
        raise RecordError("record has images but the model has no vision settings")
    key = (path, decode)
    if key not in _SIZES:
        _SIZES[key] = open_image(path).size if decode else read_image_size(path)
    return count_tiles(*_SIZES[key], config.vision)


__all__ = ["BAD", "COLUMNS", "IMG_CONTEXT", "OK", "TOO_LONG", "encode_rows", "expand", "features"]
