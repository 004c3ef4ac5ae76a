"""Write a complete, loadable model directory atomically."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import torch

from ..model.config import ModelConfig
from .files import DEFAULT_SHARD_BYTES, atomic_dir, save_safetensors, write_json_atomic
from .tokenizer import code_files, remote_code_allowed

# data files only: a student never carries Python from its teacher unless remote code was allowed
TOKENIZER_FILES = ("tokenizer.json", "special_tokens_map.json", "tokenizer.model", "vocab.json", "merges.txt",
                   "added_tokens.json", "generation_config.json", "chat_template.jinja")
TOKENIZER_CONFIG = "tokenizer_config.json"


def git_sha() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def copy_tokenizer(src: Path | None, dst: Path, trust_remote_code: bool | None = None) -> list[str]:
    """Copy the tokenizer's data files. Its Python files (and the ``auto_map`` naming them) come
    along only when remote code is allowed (``io.tokenizer.remote_code_allowed``)."""
    copied = []
    if src is None or not Path(src).is_dir():
        return copied
    src, trust = Path(src), remote_code_allowed(trust_remote_code)
    for name in TOKENIZER_FILES + (tuple(code_files(src)) if trust else ()):
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)
            copied.append(name)
    if (src / TOKENIZER_CONFIG).is_file():
        _copy_tokenizer_config(src / TOKENIZER_CONFIG, dst / TOKENIZER_CONFIG, keep_code=trust)
        copied.append(TOKENIZER_CONFIG)
    return copied


def _copy_tokenizer_config(src: Path, dst: Path, keep_code: bool) -> None:
    """tokenizer_config.json without ``auto_map`` (unless ``keep_code``); unreadable JSON is copied as is."""
    try:
        cfg = json.loads(src.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        cfg = None
    if keep_code or not isinstance(cfg, dict) or "auto_map" not in cfg:
        shutil.copy2(src, dst)
        return
    cfg.pop("auto_map")
    dst.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


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
