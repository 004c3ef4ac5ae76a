"""Where records come from: a jsonl file, a plain ``.txt`` file, or a directory of them.

A source is read into raw rows ``{"raw": bytes, "line": int, "source": int, "kind": JSONL|TEXT}``
(``source`` = position of the file in ``files``), one per non-blank jsonl line, or one per text
document: a ``.txt`` file is cut into documents at blank lines (paragraphs), each one a ``{"text"}``
record (long ones become ``max_length`` windows, see ``index``). A directory contributes every
``*.jsonl`` and ``*.txt`` file under it, sorted by path (shards keep their order).
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ..errors import UserError

JSONL, TEXT = 0, 1
SUFFIXES = (".jsonl", ".txt")


def source_files(path: str | Path) -> list[Path]:
    """The data files of ``path`` (a file, or a directory searched recursively), sorted."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES)
        if not files:
            raise UserError(f"data directory {path} holds no *.jsonl or *.txt file")
        return files
    if not path.is_file():
        raise UserError(f"data file {path} not found")
    return [path]


def raw_rows(files: tuple[str, ...]) -> Iterator[dict]:
    """Raw rows of every file in order (``files`` as strings: hashed by ``datasets``)."""
    for source, name in enumerate(files):
        path = Path(name)
        if path.suffix == ".txt":
            for line, doc in text_documents(path):
                yield {"raw": doc.encode(), "line": line, "source": source, "kind": TEXT}
            continue
        with path.open("rb") as f:
            for line, raw in enumerate(f, start=1):
                if raw.strip():
                    yield {"raw": raw, "line": line, "source": source, "kind": JSONL}


def text_documents(path: Path) -> Iterator[tuple[int, str]]:
    """(first line number, text) of each blank-line-separated document of a text file."""
    start, lines = 0, []
    with path.open(encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                start = start or number
                lines.append(line)
            elif lines:
                yield start, "".join(lines).strip()
                start, lines = 0, []
    if lines:
        yield start, "".join(lines).strip()


def where(files: list[str], source: int, line: int) -> str:
    """``line N`` for a one-file source, ``FILE line N`` for a directory."""
    return f"line {line}" if len(files) == 1 else f"{Path(files[source]).name} line {line}"
