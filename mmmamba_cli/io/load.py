"""Load any supported model source into an :class:`MMModel`.

Sources: one of our model directories (config.json with model_type "mmmamba"), a HoVLE
Hugging Face snapshot directory (config.json + safetensors index + shards, HoVLE's names), or a
single ``.safetensors`` / ``.pt`` / ``.ckpt`` / ``.bin`` state dict (HoVLE or our names) whose
config comes from ``config_path`` or is inferred from tensor shapes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import UserError
from ..model.config import ModelConfig
from ..model.model import MMModel
from .files import read_state_dir, read_state_file
from .hovle_config import config_from_hovle, is_hovle_config
from .hovle_map import hovle_to_ours
from .infer import infer_hovle_config

STATE_SUFFIXES = (".safetensors", ".pt", ".ckpt", ".bin", ".pth")


@dataclass
class LoadInfo:
    source: str
    format: str  # mmmamba | hovle | hovle-file | mmmamba-file | hf-causal-lm
    notes: list[str] = field(default_factory=list)
    tokenizer_dir: Path | None = None


def read_config_json(path: Path) -> dict:
    if not path.exists():
        raise UserError(f"{path} not found")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON (line {e.lineno}: {e.msg})") from None
    if not isinstance(d, dict):
        raise UserError(f"{path} does not hold a JSON object")
    return d


def config_from_json(d: dict, where: Path) -> ModelConfig:
    if d.get("model_type") == "mmmamba":
        try:
            return ModelConfig.from_dict(d)
        except (TypeError, ValueError) as e:
            raise UserError(f"{where}: {e}") from None
    if is_hovle_config(d):
        return config_from_hovle(d)
    raise UserError(f"{where}: unsupported config (model_type {d.get('model_type')!r}); expected a HoVLE "
                    "snapshot, an mmmamba model, or a Llama/Mistral/Qwen2 causal LM")


def load_state(path: str | Path, config_path: str | Path | None = None):
    """(config, state dict in our names, LoadInfo) without building the model."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"model path {path} does not exist")
    if path.is_dir():
        d = read_config_json(path / "config.json")
        if d.get("model_type") != "mmmamba" and not is_hovle_config(d):
            from .hf_causal_lm import load_hf_causal_lm_state  # Llama-family teachers
            return load_hf_causal_lm_state(path, d)
        config = config_from_json(d, path / "config.json")
        sd = read_state_dir(path)
        info = LoadInfo(str(path), "mmmamba" if d.get("model_type") == "mmmamba" else "hovle", tokenizer_dir=path)
    elif path.suffix in STATE_SUFFIXES:
        sd = read_state_file(path)
        if config_path is not None:
            config = config_from_json(read_config_json(Path(config_path)), Path(config_path))
            info = LoadInfo(str(path), "file", [f"config from {config_path}"])
        else:
            config, notes = infer_hovle_config(sd)
            info = LoadInfo(str(path), "file", notes)
        tok = Path(config_path).parent if config_path else path.parent
        info.tokenizer_dir = tok
    else:
        raise UserError(f"{path}: not a model directory nor a state-dict file ({', '.join(STATE_SUFFIXES)})")
    if any(k.startswith(("embedding_model.", "language_model.")) for k in sd):
        sd, unexpected, _ = hovle_to_ours(sd, config)
        if unexpected:
            raise UserError(f"unexpected tensor(s) in {path}: {', '.join(sorted(unexpected)[:8])}")
    return config, sd, info


def check_state(model: torch.nn.Module, sd: dict[str, torch.Tensor], where: str) -> None:
    """Missing, unexpected and wrongly shaped tensors, each named, as one UserError."""
    own = model.state_dict()
    if getattr(model.config, "tie_word_embeddings", False):
        sd.setdefault("lm_head.weight", sd.get("embed.embed_tokens.weight"))
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = [f"{k} {tuple(sd[k].shape)} != {tuple(own[k].shape)}" for k in own
              if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing tensor(s): {', '.join(missing[:8])}" + (" ..." if len(missing) > 8 else ""))
    if unexpected:
        problems.append(f"unexpected tensor(s): {', '.join(unexpected[:8])}")
    if shapes:
        problems.append(f"shape mismatch: {'; '.join(shapes[:4])}")
    if problems:
        raise UserError(f"{where}: " + "; ".join(problems))


def build_model(config: ModelConfig, sd: dict[str, torch.Tensor], where: str,
                dtype: torch.dtype | None = None, device=None) -> MMModel:
    with torch.device("meta"):
        model = MMModel(config)
    check_state(model, sd, where)
    model = model.to_empty(device=device or "cpu")
    if config.tie_word_embeddings:  # to_empty gives every parameter its own storage: tie the head again
        model.lm_head.weight = model.embed.embed_tokens.weight
    model.load_state_dict(sd, strict=True, assign=False)
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()


def load_model(path: str | Path, config_path: str | Path | None = None, dtype: torch.dtype | None = None,
               device=None, impl: str | None = None) -> tuple[MMModel, LoadInfo]:
    config, sd, info = load_state(path, config_path)
    if impl is not None:
        config.mamba.impl = impl
    return build_model(config, sd, str(path), dtype, device), info
