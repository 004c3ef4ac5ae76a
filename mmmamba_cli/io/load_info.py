"""What a loader found: the source, its format, notes for the user, where its tokenizer is."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class LoadInfo:
    source: str
    format: str  # mmmamba | hovle | mmmamba-release | file | hf-causal-lm
    notes: list[str] = field(default_factory=list)
    tokenizer_dir: Path | None = None
