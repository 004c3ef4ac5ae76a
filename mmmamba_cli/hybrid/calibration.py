"""A small, reproducible calibration set drawn from the distillation data.

``data`` is a jsonl file (any format :func:`mmmamba_cli.data.load_sft_dataset` reads) or ``easyvqa``
(its train split). ``2 n`` records are drawn without replacement by ``random.Random(seed)``,
encoded in that order, and the first ``n`` that load (readable, not over ``max_length``) are kept,
so the same seed and file always give the same items. Only the drawn lines are parsed.
"""
from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path

from ..data import collate, easyvqa_records, load_sft_dataset
from ..errors import UserError

EASYVQA = "easyvqa"


def _source_lines(data: str | Path) -> tuple[list[str] | Path, int]:
    """easy-vqa records as JSON lines (in memory) or a jsonl path, and the record count."""
    if str(data) == EASYVQA:
        lines = [json.dumps(r) for r in easyvqa_records("train")]
        return lines, len(lines)
    path = Path(data)
    if not path.is_file():
        raise UserError(f"--data {data}: no such file (give a .jsonl file or 'easyvqa')")
    with path.open("rb") as f:
        return path, sum(1 for raw in f if raw.strip())


def draw_lines(data: str | Path, n: int, seed: int) -> list[tuple[int, str]]:
    """``min(2 n, total)`` (record number from 0, JSON line) pairs in draw order."""
    source, total = _source_lines(data)
    if total == 0:
        raise UserError(f"--data {data}: no records")
    order = random.Random(seed).sample(range(total), min(2 * n, total))
    if isinstance(source, list):
        return [(i, source[i]) for i in order]
    wanted, found = set(order), {}
    with source.open("rb") as f:
        for i, raw in enumerate(r for r in f if r.strip()):
            if i in wanted:
                found[i] = raw.decode("utf-8", errors="replace").strip()
    return [(i, found[i]) for i in order]


def calibration_items(data: str | Path, tokenizer, config, n: int, seed: int = 0, max_length: int | None = 2048,
                      image_root: str | Path | None = None) -> tuple[list[dict], dict]:
    """(items ``{"input_ids", "labels", "pixel_values"}``, summary with the record numbers used)."""
    if n < 1:
        raise UserError(f"--calib-samples {n}: need at least 1")
    drawn = draw_lines(data, n, seed)
    root = image_root if image_root is not None else (None if str(data) == EASYVQA else Path(data).parent)
    with tempfile.TemporaryDirectory(prefix="mmmamba-calib-") as tmp:
        path = Path(tmp) / "calibration.jsonl"
        path.write_text("".join(line + "\n" for _, line in drawn))
        dataset, stats = load_sft_dataset(path, tokenizer, config, image_root=root or tmp, max_length=max_length)
        keep = range(min(n, len(dataset)))
        items = [dataset[j] for j in keep]
        records = [drawn[dataset.rows[j]["line"] - 1][0] for j in keep]
    if not items:
        why = "; ".join(f"record {drawn[int(m.split()[1].rstrip(':')) - 1][0]}{m[m.index(':'):]}"
                        for m in stats.messages[:3])
        raise UserError(f"--data {data}: none of the {len(drawn)} drawn records could be used "
                        f"({stats.bad} unreadable, {stats.too_long} over {max_length} tokens)"
                        + (f"; {why}" if why else ""))
    summary = {"data": str(data), "seed": seed, "requested": n, "used": len(items), "drawn": len(drawn),
               "skipped_unreadable": stats.bad, "skipped_too_long": stats.too_long,
               "records": records, "tokens": sum(len(it["input_ids"]) for it in items)}
    return items, summary


def calibration_batches(items: list[dict], pad_token_id: int, batch_size: int) -> list[dict]:
    """Right-padded batches in item order."""
    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size}: need at least 1")
    return [collate(items[s:s + batch_size], pad_token_id, "right") for s in range(0, len(items), batch_size)]
