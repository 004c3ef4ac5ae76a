"""Benchmark files in the TSV format of the widely used VLM evaluation kit (MME, POPE, MMBench,
ScienceQA, ...): one row per question, tab-separated, a header row.

Columns: ``index``, ``question``, ``answer`` (required); ``image``: a base64-encoded image, a
list of them (``['...', '...']``), or, when at most 64 characters long, the ``index`` of another
row whose image it shares; or ``image_path`` (paths relative to the image root) instead;
option columns ``A``, ``B``, ``C``, ... (empty cells skipped); ``hint`` and ``category`` optional.
"""
from __future__ import annotations

import ast
import base64
import binascii
import csv
import string
import sys
from pathlib import Path

from ..errors import UserError
from .items import EvalItem, image_header

REQUIRED = ("index", "question", "answer")
MISSING = ("", "nan", "NaN", "None")  # how pandas writes an empty cell
REFERENCE_MAX = 64  # an image cell this short names another row's index


def read_tsv(path: Path, image_root: Path | None = None, limit: int | None = None) -> tuple[list[EvalItem], bool]:
    """(items, has option columns). Images of the kept rows are base64-decoded and their headers
    checked; any problem is a ``UserError`` naming the row."""
    rows, columns = _rows(path)
    letters = [c for c in columns if len(c) == 1 and c in string.ascii_uppercase]
    cells = {r["index"]: r.get("image", "") for r in rows}
    root = image_root or path.parent
    items = []
    for number, row in enumerate(rows[:limit] if limit else rows, start=2):  # row 1 is the header
        where = f"{path.name} row {number} (index {row['index']})"
        options = {c: row[c] for c in letters if _present(row.get(c))}
        images, key = _images(row, cells, root, where)
        items.append(EvalItem(
            index=row["index"], question=row["question"], answers=[_answer(row["answer"], options)],
            images=images, sizes=[image_header(s, where) for s in images], options=options,
            hint=row.get("hint", "") if _present(row.get("hint")) else "",
            category=row.get("category", "") if _present(row.get("category")) else "", image_key=key))
    return items, bool(letters)


def _rows(path: Path) -> tuple[list[dict], list[str]]:
    csv.field_size_limit(min(sys.maxsize, 2 ** 31 - 1))  # base64 images are long cells
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f, delimiter="\t")
            columns = list(reader.fieldnames or [])
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)} (has: {', '.join(columns[:12])})")
    if not rows:
        raise UserError(f"{path} has no rows")
    for number, row in enumerate(rows, start=2):  # row 1 is the header
        extra = [c for c in row.pop(None, None) or [] if c.strip()]  # trailing empty cells are harmless
        cells = sum(v is not None for k, v in row.items() if k is not None) + len(extra)
        if extra or cells != len(columns):
            raise UserError(f"{path.name} row {number}: {cells} tab-separated cell(s), the header has "
                            f"{len(columns)} (a ragged row; check tabs inside cells)")
        row["index"] = row["index"].strip()
    return rows, columns


def _present(value: str | None) -> bool:
    return value is not None and value.strip() not in MISSING


def _answer(answer: str, options: dict[str, str]) -> str:
    """The answer as written, or the letter of the option whose text it is."""
    answer = answer.strip()
    if options and answer not in options:
        for letter, text in options.items():
            if text.strip() == answer:
                return letter
    return answer


def _images(row: dict, cells: dict[str, str], root: Path, where: str) -> tuple[list, str]:
    """(image sources, key of the row owning the image)."""
    cell, key = (row.get("image") or "").strip(), row["index"]
    if _present(cell) and len(cell) <= REFERENCE_MAX:  # shares another row's image
        key = cell
        cell = (cells.get(cell) or "").strip()
        if len(cell) <= REFERENCE_MAX:
            raise UserError(f"{where}: image refers to index {key}, which has no image")
    if _present(cell):
        return [_decode(e, where) for e in _list(cell, where)], key
    if _present(row.get("image_path")):
        return [str(root / p) for p in _list(row["image_path"].strip(), where)], key
    return [], key


def _list(cell: str, where: str) -> list[str]:
    """A cell holding one value or a Python list literal of strings."""
    if not cell.startswith("["):
        return [cell]
    try:
        values = ast.literal_eval(cell)
    except (ValueError, SyntaxError):
        values = None
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise UserError(f"{where}: image cell is neither base64 nor a list of base64 strings")
    return values


def _decode(encoded: str, where: str) -> bytes:
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise UserError(f"{where}: cannot decode the base64 image ({exc})") from None
