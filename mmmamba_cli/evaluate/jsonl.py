"""Evaluation items from a jsonl file, one JSON object per line, either

- ``{"question": str, "answer": str | [str] (or "answers"), "image": path | [paths] (optional),
  "options": {"A": text, ...} | [text, ...] (optional), "hint", "category", "index" | "id"}``, or
- an InternVL conversation ``{"image": ..., "conversations": [{"from": "human", "value": question},
  {"from": "gpt", "value": answer}, ...]}`` (the first question and its answer are used).

Relative image paths resolve against the image root (default: the file's folder).
"""
from __future__ import annotations

import json
import string
from pathlib import Path

from ..errors import UserError
from .items import EvalItem, image_header


def read_jsonl(path: Path, image_root: Path | None = None, limit: int | None = None) -> list[EvalItem]:
    root = image_root or path.parent
    items: list[EvalItem] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    for number, line in enumerate(lines, start=1):
        if limit and len(items) >= limit:
            break
        if line.strip():
            items.append(_item(line, number, root, f"{path.name} line {number}"))
    if not items:
        raise UserError(f"{path} has no records")
    return items


def _item(line: str, number: int, root: Path, where: str) -> EvalItem:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UserError(f"{where}: bad JSON ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{where}: not a JSON object")
    question, answers = _question_answers(obj, where)
    images = _paths(obj.get("image", obj.get("images")), root, where)
    options = _options(obj.get("options"), where)
    if options:  # an answer given as option text becomes its letter
        answers = [next((k for k, v in options.items() if v == a), a) for a in answers]
    index = str(obj.get("index", obj.get("id", obj.get("question_id", number))))
    return EvalItem(index=index, question=question, answers=answers, images=images,
                    sizes=[image_header(p, where) for p in images], options=options,
                    hint=str(obj.get("hint") or ""), category=str(obj.get("category") or ""),
                    image_key="|".join(images))


def _question_answers(obj: dict, where: str) -> tuple[str, list[str]]:
    if "conversations" in obj:
        turns = obj["conversations"]
        ok = isinstance(turns, list) and len(turns) >= 2 and all(isinstance(t, dict) for t in turns[:2])
        if not ok or turns[0].get("from") != "human" or turns[1].get("from") != "gpt":
            raise UserError(f"{where}: 'conversations' must start with a human turn and a gpt answer")
        return str(turns[0].get("value", "")), [str(turns[1].get("value", ""))]
    if "question" not in obj:
        raise UserError(f"{where}: no 'question' field (nor 'conversations')")
    answer = obj.get("answer", obj.get("answers"))
    answers = answer if isinstance(answer, list) else [answer]
    if answer is None or not answers or not all(isinstance(a, (str, int, float)) for a in answers):
        raise UserError(f"{where}: 'answer' must be a string or a list of strings")
    return str(obj["question"]), [str(a) for a in answers]


def _paths(value, root: Path, where: str) -> list[str]:
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, str) and v for v in values):
        raise UserError(f"{where}: 'image' must be a path or a list of paths")
    return [str(root / v) for v in values]


def _options(value, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, list):
        value = dict(zip(string.ascii_uppercase, value))
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise UserError(f"{where}: 'options' must be {{letter: text}} or a list of texts")
    return {str(k).strip().upper(): v for k, v in value.items()}
