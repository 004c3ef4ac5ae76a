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
