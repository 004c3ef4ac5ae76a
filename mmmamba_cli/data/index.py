"""The data index: every record tokenized once with ``datasets``, kept on disk, shared by all.

``build_index`` reads a source (``sources``), runs ``rows.encode_rows`` with ``datasets.map``
over ``num_proc`` processes, keeps the usable rows and saves them as Arrow files in
``CACHE/index-<fingerprint>/`` together with ``stats.json`` (what was read, kept and skipped).
The fingerprint covers the data files (path, size, modification time), the tokenizer (its
vocabulary and settings), the template inputs of the model config (vision settings, image token,
system prompt) and the loading settings (image root, max_length, long text, strict), so a second
stage, a second process or a rerun finds the same directory and only opens it. ``open_index``
memory-maps it: records stay on disk; an item is decoded (and its images loaded) on access.

Multi-process runs: the main process builds while the others wait, then all open the same
directory (``distill.data.load_dataset``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from . import rows as R
from .errors import RecordError
from .images import load_image
from .sources import raw_rows, source_files, where

if TYPE_CHECKING:  # only for annotations: keeps model/ out of the import graph
    from ..model.config import ModelConfig

INDEX_VERSION = 1  # bump when the row layout or the encoding changes
MAX_REPORTED = 5
PARALLEL_MIN_ROWS = 2000  # below this many rows per process, one process is faster


@dataclass(frozen=True)
class IndexSettings:
    image_root: str | None = None
    """Folder that relative image paths start from (default: each data file's folder)."""
    max_length: int | None = 2048
    long_text: str = "split"
    """Plain-text records over max_length: ``split`` into max_length windows, or ``drop``."""
    strict: bool = False
    """Decode every image fully while building; any unreadable record raises RecordError."""


@dataclass
class LoadStats:
    """What was read, kept and skipped (with the first few line numbers)."""

    path: str
    lines: int = 0  # records read (non-blank lines, text documents)
    kept: int = 0  # rows kept (a long text split into windows counts once per window)
    bad: int = 0
    too_long: int = 0
    bad_lines: list[int] = dataclasses.field(default_factory=list)
    too_long_lines: list[int] = dataclasses.field(default_factory=list)
    messages: list[str] = dataclasses.field(default_factory=list)
    tokens: int = 0  # tokens of the kept rows
    build_s: float = 0.0  # seconds the build took (0: opened from the cache)

    def summary(self) -> str:
        return (f"{self.path}: kept {self.kept} of {self.lines} records; skipped {self.bad} "
                f"unreadable (lines {self.bad_lines}) and {self.too_long} over max_length "
                f"(lines {self.too_long_lines})")


class SFTDataset(torch.utils.data.Dataset):
    """Items: ``{"input_ids": (L,) long, "labels": (L,) long, "pixel_values": (k, 3, S, S) | None}``.

    ``rows`` is the memory-mapped index (a ``datasets.Dataset``); nothing is held per record.
    """

    def __init__(self, rows, config: ModelConfig, files: list[str]):
        self.rows, self.config, self.files = rows, config, files
        self._np = rows.with_format("numpy", columns=["ids", "spans"])
        self._meta = rows.select_columns(["line", "source", "images", "tiles"])
        self.context_id = config.img_context_token_id if config.img_context_token_id is not None else -1

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def lengths(self) -> list[int]:
        """Token count of every item."""
        return self.rows.with_format("numpy", columns=["num_tokens"])[:]["num_tokens"].tolist() if len(self) else []

    def __getitem__(self, index: int) -> dict:
        compact = self._np[index]
        input_ids, labels = R.expand(compact["ids"], compact["spans"], self.context_id)
        row, tiles = self._meta[index], []
        if row["images"]:
            try:
                tiles = [load_image(p, self.config.vision) for p in row["images"]]
                for p, t, k in zip(row["images"], tiles, row["tiles"]):
                    if t.shape[0] != k:
                        raise RecordError(f"image {p} now gives {t.shape[0]} tiles, the index has {k} "
                                          "(it changed since the index was built: delete the index)")
            except RecordError as exc:
                raise RecordError(f"{where(self.files, row['source'], row['line'])}: {exc}") from None
        return {"input_ids": torch.from_numpy(input_ids), "labels": torch.from_numpy(labels),
                "pixel_values": torch.cat(tiles) if tiles else None}


def index_dir(path: str | Path, tokenizer, config: ModelConfig, settings: IndexSettings,
              cache_dir: str | Path) -> Path:
    """Where the index of this data / tokenizer / config / settings lives (built or not)."""
    return Path(cache_dir) / f"index-{fingerprint(source_files(path), tokenizer, config, settings)}"


def fingerprint(files: list[Path], tokenizer, config: ModelConfig, settings: IndexSettings) -> str:
    h = hashlib.sha256(f"v{INDEX_VERSION}".encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    h.update(_tokenizer_key(tokenizer))
    vision = dataclasses.asdict(config.vision) if config.vision else None
    h.update(json.dumps([vision, config.img_context_token_id, config.system_prompt, config.template,
                         dataclasses.asdict(settings)], sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def build_index(path: str | Path, tokenizer, config: ModelConfig, settings: IndexSettings,
                cache_dir: str | Path, num_proc: int = 0, log: Callable[[str], None] | None = None) -> Path:
    """Build the index of ``path`` under ``cache_dir`` unless it is there; returns its directory.

    Under ``settings.strict`` the first unreadable record raises ``RecordError("line N: ...")``
    and nothing is cached. ``num_proc`` 0: every CPU (one process for small files).
    """
    import datasets  # deferred: slow to import

    check_tokenizer(tokenizer, config)
    files = source_files(path)
    out = index_dir(path, tokenizer, config, settings, cache_dir)
    if (out / "stats.json").exists():
        return out
    t0 = time.perf_counter()
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".index-build-", dir=cache_dir))
    try:
        names = [str(f) for f in files]  # a tuple below: datasets would shard a list between generator calls
        raw = datasets.Dataset.from_generator(raw_rows, gen_kwargs={"files": tuple(names)}, cache_dir=str(tmp / "raw"))
        procs = _procs(num_proc, len(raw))
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the map forks: no Rust threads before it
        R._SIZES.clear()
        roots = [str(settings.image_root) if settings.image_root is not None else str(f.parent) for f in files]
        encoded = raw.map(
            R.encode_rows, batched=True, batch_size=500, num_proc=procs, remove_columns=raw.column_names,
            features=R.features(), cache_file_name=str(tmp / "encoded.arrow"), new_fingerprint=out.name,
            desc=f"indexing {Path(path).name}",
            fn_kwargs={"tokenizer": tokenizer, "config": config, "roots": roots, "max_length": settings.max_length,
                       "long_text": settings.long_text, "strict": settings.strict})
        stats, keep = _stats(encoded, names, str(path), len(raw))
        if settings.strict and stats.bad:
            raise RecordError(stats.messages[0])
        kept = encoded.select(keep)
        kept.save_to_disk(str(tmp / "index"))
        stats.build_s = time.perf_counter() - t0
        (tmp / "index" / "stats.json").write_text(json.dumps({**dataclasses.asdict(stats), "files": names}))
        del raw, encoded, kept
        try:
            (tmp / "index").rename(out)
        except OSError:  # another build finished first: use it
            if not (out / "stats.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if log is not None:
        log(f"indexed {stats.lines} records of {path} in {stats.build_s:.1f} s with {procs} process(es) "
            f"({stats.lines / max(stats.build_s, 1e-9):.0f} records/s) -> {out}")
    return out


def open_index(directory: str | Path, config: ModelConfig) -> tuple[SFTDataset, LoadStats]:
    """The memory-mapped dataset of an index directory and its load statistics."""
    import datasets  # deferred: slow to import

    meta = json.loads((Path(directory) / "stats.json").read_text())
    files = meta.pop("files")
    stats = LoadStats(**{**meta, "build_s": 0.0})
    return SFTDataset(_load_rows(directory), config, files), stats


def _load_rows(directory: str | Path, keep_in_memory: bool = False):
    """The index's rows; an index that kept no record has no Arrow shard, which datasets cannot open."""
    import datasets  # deferred: slow to import

    state = json.loads((Path(directory) / "state.json").read_text())
    if not state.get("_data_files"):
        return datasets.Dataset.from_dict({name: [] for name in R.features()}, features=R.features())
    return datasets.load_from_disk(str(directory), keep_in_memory=keep_in_memory)


def load_sft_dataset(path: str | Path, tokenizer, config: ModelConfig, image_root: str | Path | None = None,
                     max_length: int | None = 2048, strict: bool = False, long_text: str = "split",
                     cache_dir: str | Path | None = None, num_proc: int = 0) -> tuple[SFTDataset, LoadStats]:
    """Index ``path`` (a jsonl / txt file or a directory) and open it: (dataset, stats).

    Unreadable records are skipped and counted (``strict``: ``RecordError("line N: ...")``); records
    over ``max_length`` tokens are skipped and counted, plain text split into windows (``long_text``).
    Without ``cache_dir`` the index is built in a temporary directory and held in memory.
    """
    settings = IndexSettings(None if image_root is None else str(image_root), max_length, long_text, strict)
    if cache_dir is not None:
        return open_index(build_index(path, tokenizer, config, settings, cache_dir, num_proc), config)
    with tempfile.TemporaryDirectory(prefix="mmmamba-index-") as tmp:
        directory = build_index(path, tokenizer, config, settings, tmp, num_proc)
        dataset, stats = open_index(directory, config)
        rows = _load_rows(directory, keep_in_memory=True)
    return SFTDataset(rows, config, dataset.files), stats


def check_tokenizer(tokenizer, config: ModelConfig) -> None:
    from .template import IMG_CONTEXT

    if config.vision is None or config.img_context_token_id is None:
        return
    tid = tokenizer.convert_tokens_to_ids(IMG_CONTEXT)
    if tid != config.img_context_token_id:
        raise ValueError(f"tokenizer maps {IMG_CONTEXT} to {tid}, the model config expects "
                         f"img_context_token_id {config.img_context_token_id}")


# ---- internals ------------------------------------------------------------------------------
def _procs(num_proc: int, n_rows: int) -> int | None:
    n = num_proc or os.cpu_count() or 1
    n = max(1, min(n, n_rows // PARALLEL_MIN_ROWS))
    return n if n > 1 else None


def _stats(encoded, files: list[str], path: str, n_records: int) -> tuple[LoadStats, np.ndarray]:
    cols = encoded.with_format("numpy", columns=["status", "num_tokens"])[:]
    status, tokens = cols["status"], cols["num_tokens"]
    stats = LoadStats(path, lines=n_records)
    keep = np.flatnonzero(status == R.OK)
    stats.kept, stats.tokens = len(keep), int(tokens[keep].sum())
    bad, long = np.flatnonzero(status == R.BAD), np.flatnonzero(status == R.TOO_LONG)
    stats.bad, stats.too_long = len(bad), len(long)
    for i in bad[:MAX_REPORTED]:
        row = encoded[int(i)]
        stats.bad_lines.append(int(row["line"]))
        stats.messages.append(f"{where(files, row['source'], row['line'])}: {row['message']}")
    stats.too_long_lines = [int(encoded[int(i)]["line"]) for i in long[:MAX_REPORTED]]
    return stats, keep


def _tokenizer_key(tokenizer) -> bytes:
    """Bytes that change whenever the tokenizer would encode differently."""
    backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
    body = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    extra = json.dumps([type(tokenizer).__name__, str(getattr(tokenizer, "chat_template", None)),
                        tokenizer.bos_token_id, tokenizer.eos_token_id], default=str)
    return hashlib.sha256((body + extra).encode()).digest()
