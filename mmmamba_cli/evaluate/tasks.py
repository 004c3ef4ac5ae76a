"""Resolve ``--task``: the built-in easy-vqa test split, a jsonl file or a TSV file."""
from __future__ import annotations

from pathlib import Path

from ..data import easyvqa_records
from ..errors import UserError
from .items import EvalItem, Task, image_header
from .jsonl import read_jsonl
from .kinds import get_kind
from .normalize import normalize_answer
from .tsv import read_tsv

BUILTIN = ("easyvqa",)
EASYVQA_SHAPES = frozenset({"circle", "rectangle", "triangle"})


def load_task(spec: str, kind: str | None = None, image_root: str | Path | None = None,
              limit: int | None = None, suffix: str | None = None,
              max_new_tokens: int | None = None) -> Task:
    """A task from its name or file; ``kind`` defaults to what the data look like (option columns
    -> mc; every answer yes/no -> yesno; else vqa); ``suffix`` and ``max_new_tokens`` default to
    the kind's (easy-vqa: no suffix, as its teacher was trained, and 3 new tokens)."""
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be at least 1, not {limit}")
    if kind is not None:
        get_kind(kind)
    root = Path(image_root) if image_root is not None else None
    if root is not None and not root.is_dir():
        raise UserError(f"image root {root} is not a directory")
    if spec == "easyvqa":
        items, name, source, default_suffix, default_tokens = _easyvqa(limit), "easyvqa", "built-in", "", 3
        has_options = False
    else:
        path = Path(spec)
        if path.suffix not in (".jsonl", ".tsv") or not path.is_file():
            what = "no such file" if path.suffix in (".jsonl", ".tsv") else "unknown task"
            raise UserError(f"{what}: {spec!r}; use {', '.join(BUILTIN)}, a .jsonl file or a .tsv file")
        if path.suffix == ".tsv":
            items, has_options = read_tsv(path, root, limit)
        else:
            items = read_jsonl(path, root, limit)
            has_options = any(it.options for it in items)
        name, source, default_suffix, default_tokens = path.stem, str(path), None, None
    kind = kind or _guess_kind(items, has_options)
    _check(items, kind)
    k = get_kind(kind)
    extra = ("mme",) if kind == "yesno" and name.lower().startswith("mme") else ()
    return Task(name=name, kind=kind, items=items, source=source,
                suffix=suffix if suffix is not None else (default_suffix if default_suffix is not None else k.suffix),
                max_new_tokens=max_new_tokens or default_tokens or k.max_new_tokens, extra_metrics=extra)


def _easyvqa(limit: int | None) -> list[EvalItem]:
    records = easyvqa_records("test")[:limit] if limit else easyvqa_records("test")
    return [EvalItem(index=str(i), question=r["question"], answers=[r["answer"]], images=[r["image"]],
                     sizes=[image_header(r["image"], f"easy-vqa test item {i}")],
                     category=_easyvqa_category(r["answer"]), image_key=r["image"])
            for i, r in enumerate(records)]


def _easyvqa_category(answer: str) -> str:
    return "yes/no" if answer in ("yes", "no") else "shape" if answer in EASYVQA_SHAPES else "color"


def _guess_kind(items: list[EvalItem], has_options: bool) -> str:
    if has_options:
        return "mc"
    if all(normalize_answer(it.answers[0]) in ("yes", "no") for it in items):
        return "yesno"
    return "vqa"


def _check(items: list[EvalItem], kind: str) -> None:
    """Items must fit their kind: options for mc (answer one of the letters), yes/no answers."""
    for it in items:
        if kind == "mc" and (len(it.options) < 2 or it.answers[0] not in it.options):
            raise UserError(f"{it.where()}: a multiple-choice item needs option columns A, B, ... and an "
                            f"answer among their letters (got {it.answers[0]!r}, options {list(it.options)})")
        if kind == "yesno" and normalize_answer(it.answers[0]) not in ("yes", "no"):
            raise UserError(f"{it.where()}: answer {it.answers[0]!r} is not yes/no")
