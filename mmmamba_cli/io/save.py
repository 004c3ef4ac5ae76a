"""Write a complete, loadable model directory atomically."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import torch

from ..model.config import ModelConfig
from .files import DEFAULT_SHARD_BYTES, atomic_dir, save_safetensors, write_json_atomic

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "tokenization_internlm2.py", "tokenization_internlm2_fast.py", "vocab.json", "merges.txt",
                   "added_tokens.json", "generation_config.json", "chat_template.jinja")


def git_sha() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def copy_tokenizer(src: Path | None, dst: Path) -> list[str]:
    copied = []
    if src is None or not Path(src).is_dir():
        return copied
    for name in TOKENIZER_FILES:
        if (Path(src) / name).exists():
            shutil.copy2(Path(src) / name, dst / name)
            copied.append(name)
    return copied


def write_model_files(directory: Path, config: ModelConfig, state: dict[str, torch.Tensor],
                      tokenizer_dir: Path | None = None, extra_json: dict | None = None,
                      shard_bytes: int = DEFAULT_SHARD_BYTES) -> None:
    directory = Path(directory)
    config.save(directory / "config.json")
    if config.tie_word_embeddings:  # the head is the embedding table: stored once, as transformers does
        state = {k: v for k, v in state.items() if k != "lm_head.weight"}
    save_safetensors(state, directory, shard_bytes)
    copy_tokenizer(tokenizer_dir, directory)
    for name, obj in (extra_json or {}).items():
        write_json_atomic(directory / name, obj)


def save_model_dir(out: str | Path, config: ModelConfig, state: dict[str, torch.Tensor],
                   tokenizer_dir: Path | None = None, extra_json: dict | None = None, force: bool = False,
                   shard_bytes: int = DEFAULT_SHARD_BYTES) -> Path:
    """config.json + safetensors (sharded past ``shard_bytes``) + tokenizer + extra JSON files."""
    with atomic_dir(out, force) as tmp:
        write_model_files(tmp, config, state, tokenizer_dir, extra_json, shard_bytes)
    return Path(out)
