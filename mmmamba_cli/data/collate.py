"""Batching: pad token sequences and concatenate every image tile of the batch in order."""
from __future__ import annotations

import torch

from .template import IGNORE_INDEX


def collate(batch: list[dict], pad_token_id: int, padding_side: str = "right") -> dict:
    """Items ``{"input_ids", "labels" (optional), "pixel_values" (k, 3, S, S) | None}`` -> batch.

    Returns ``input_ids`` (b, L), ``attention_mask`` (b, L) with 1 on real tokens, ``labels``
    (b, L) with -100 on padding (None when the items have none) and ``pixel_values``
    (sum k, 3, S, S) or None. Use ``padding_side="left"`` for generation.
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', not {padding_side!r}")
    if not batch:
        raise ValueError("cannot collate an empty batch")
    length = max(len(item["input_ids"]) for item in batch)
    has_labels = all(item.get("labels") is not None for item in batch)
    ids = torch.full((len(batch), length), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(batch), length), dtype=torch.long)
    labels = torch.full((len(batch), length), IGNORE_INDEX, dtype=torch.long)
    for row, item in enumerate(batch):
        n = len(item["input_ids"])
        span = slice(length - n, length) if padding_side == "left" else slice(0, n)
        ids[row, span] = torch.as_tensor(item["input_ids"], dtype=torch.long)
        mask[row, span] = 1
        if has_labels:
            labels[row, span] = torch.as_tensor(item["labels"], dtype=torch.long)
    tiles = [item["pixel_values"] for item in batch if item.get("pixel_values") is not None]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels if has_labels else None,
            "pixel_values": torch.cat(tiles) if tiles else None}


def pack(batch: list[dict], pad_token_id: int, max_length: int) -> dict:
    """Items -> rows of up to ``max_length`` tokens holding several items each, plus ``seq_idx``.

    As few rows as the tokens need, filled evenly (so they pad little): longest item first, each
    into the least-filled row with room (a new row when none has). Rows and the items in them
    keep the batch order, so the result is a function of the items alone. Returns what
    ``collate`` returns (right padding) and ``seq_idx`` (rows, L) long: 0, 1, ... for the items
    of a row, one more for its padding. Each item's first label is dropped: in a packed row the
    position before it belongs to the previous item, and alone no position predicts it either.
    Tiles follow the packed order (row by row).
    """
    if not batch:
        raise ValueError("cannot pack an empty batch")
    lengths = [len(item["input_ids"]) for item in batch]
    if max(lengths) > max_length:
        raise ValueError(f"an item of {max(lengths)} tokens does not fit a packed row of {max_length}")
    members: list[list[int]] = [[] for _ in range(-(-sum(lengths) // max_length))]
    fill = [0] * len(members)
    for i in sorted(range(len(batch)), key=lambda i: -lengths[i]):
        fits = [r for r in range(len(members)) if fill[r] + lengths[i] <= max_length]
        if not fits:
            members.append([])
            fill.append(0)
            fits = [len(members) - 1]
        r = min(fits, key=lambda r: (fill[r], r))
        members[r].append(i)
        fill[r] += lengths[i]
    rows = [[batch[i] for i in sorted(m)] for m in sorted((m for m in members if m), key=min)]
    merged = [_merge(items) for items in rows]
    out = collate(merged, pad_token_id, "right")
    seq_idx = torch.zeros_like(out["input_ids"])
    for r, items in enumerate(rows):
        start = 0
        for j, item in enumerate(items):
            seq_idx[r, start:start + len(item["input_ids"])] = j
            start += len(item["input_ids"])
        seq_idx[r, start:] = len(items)
    out["seq_idx"] = seq_idx
    return out


def _merge(items: list[dict]) -> dict:
    ids = torch.cat([torch.as_tensor(it["input_ids"], dtype=torch.long) for it in items])
    labels = None
    if all(it.get("labels") is not None for it in items):
        parts = [torch.as_tensor(it["labels"], dtype=torch.long).clone() for it in items]
        for p in parts:
            p[:1] = IGNORE_INDEX
        labels = torch.cat(parts)
    tiles = [it["pixel_values"] for it in items if it.get("pixel_values") is not None]
    return {"input_ids": ids, "labels": labels, "pixel_values": torch.cat(tiles) if tiles else None}
