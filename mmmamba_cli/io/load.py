"""Load any supported model source into an :class:`MMModel`.

Sources: one of our model directories (config.json with model_type "mmmamba"), a HoVLE
Hugging Face snapshot directory (config.json + safetensors index + shards, HoVLE's names), a
released mmMamba directory (``hustvl/mmMamba-linear`` / ``-hybrid`` layout, model_type
"mmMamba_chat"), a Llama-family causal LM directory, or a single ``.safetensors`` / ``.pt`` /
``.ckpt`` / ``.bin`` state dict (HoVLE, release or our names) whose config comes from
``config_path`` or, for HoVLE names, is inferred from tensor shapes.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from ..errors import UserError
from ..model.attention import set_attention_impl
from ..model.config import ModelConfig
from ..model.model import MMModel
from .files import read_state_dir, read_state_file
from .hf_causal_lm import load_hf_causal_lm_state
from .hovle_config import config_from_hovle, is_hovle_config
from .hovle_map import hovle_to_ours
from .infer_config import infer_hovle_config
from .load_info import LoadInfo
from .release_config import config_from_release, is_release_config, release_notes
from .release_map import release_to_ours, untrained_notes

STATE_SUFFIXES = (".safetensors", ".pt", ".ckpt", ".bin", ".pth")
log = logging.getLogger(__name__)

__all__ = ["LoadInfo", "STATE_SUFFIXES", "build_model", "check_loadable", "check_state", "config_from_json", "load_model",
           "load_state", "read_config_json", "source_format"]


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


def source_format(d: dict) -> str | None:
    """'mmmamba' | 'mmmamba-release' | 'hovle' for a config.json we read ourselves, else None."""
    if d.get("model_type") == "mmmamba":
        return "mmmamba"
    if is_release_config(d):
        return "mmmamba-release"
    return "hovle" if is_hovle_config(d) else None


def config_from_json(d: dict, where: Path) -> ModelConfig:
    fmt = source_format(d)
    if fmt == "mmmamba":
        try:
            return ModelConfig.from_dict(d)
        except (TypeError, ValueError) as e:
            raise UserError(f"{where}: {e}") from None
    if fmt == "mmmamba-release":
        return config_from_release(d)
    if fmt == "hovle":
        return config_from_hovle(d)
    raise UserError(f"{where}: unsupported config (model_type {d.get('model_type')!r}); expected a HoVLE "
                    "snapshot, a released mmMamba model, an mmmamba model, or a Llama/Mistral/Qwen2 causal LM")


def _hovle_head(sd: dict[str, torch.Tensor], config: ModelConfig) -> list[str]:
    """HoVLE's tie is head = the LLM's tok_embeddings (unused otherwise), ours head = text table."""
    out, tok, text = ("language_model.output.weight", "language_model.model.tok_embeddings.weight",
                      "embedding_model.llm_text_embeddings.weight")
    notes = []
    if out not in sd and tok in sd:  # a tied save that kept only the input side
        sd[out] = sd[tok]
        notes.append(f"output head read from {tok} (the file ties them)")
    if config.tie_word_embeddings and out in sd and text in sd and not torch.equal(sd[out], sd[text]):
        config.tie_word_embeddings = False
        notes.append("tie_word_embeddings: the head differs from the text table (HoVLE ties it to tok_embeddings); "
                     "loaded untied")
    return notes


def _rename(sd: dict[str, torch.Tensor], config: ModelConfig, fmt: str | None, path: Path):
    """HoVLE / release names -> ours (our own names pass through)."""
    if not any(k.startswith(("embedding_model.", "language_model.")) for k in sd):
        return sd, []
    head_notes = _hovle_head(sd, config)
    if fmt == "mmmamba-release" or config.mamba_layers:
        sd, unexpected, _ = release_to_ours(sd, config)
    else:
        sd, unexpected, _ = hovle_to_ours(sd, config)
    if unexpected:
        raise UserError(f"unexpected tensor(s) in {path}: {', '.join(sorted(unexpected)[:8])}")
    notes = head_notes + (untrained_notes(sd, config) if fmt == "mmmamba-release" else [])
    for n in notes:
        log.warning("%s: %s", path, n)
    return sd, notes


def load_state(path: str | Path, config_path: str | Path | None = None):
    """(config, state dict in our names, LoadInfo) without building the model."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"model path {path} does not exist")
    if path.is_dir():
        d = read_config_json(path / "config.json")
        fmt = source_format(d)
        if fmt is None:
            return load_hf_causal_lm_state(path, d)  # Llama-family teachers
        config = config_from_json(d, path / "config.json")
        sd = read_state_dir(path)
        info = LoadInfo(str(path), fmt, release_notes(d) if fmt == "mmmamba-release" else [], tokenizer_dir=path)
    elif path.suffix in STATE_SUFFIXES:
        sd = read_state_file(path)
        if config_path is not None:
            d = read_config_json(Path(config_path))
            fmt = source_format(d)
            config = config_from_json(d, Path(config_path))
            info = LoadInfo(str(path), "file", [f"config from {config_path}"]
                            + (release_notes(d) if fmt == "mmmamba-release" else []))
        else:
            fmt = None
            config, notes = infer_hovle_config(sd)
            info = LoadInfo(str(path), "file", notes)
        info.tokenizer_dir = Path(config_path).parent if config_path else path.parent
    else:
        raise UserError(f"{path}: not a model directory nor a state-dict file ({', '.join(STATE_SUFFIXES)})")
    sd, notes = _rename(sd, config, fmt, path)
    info.notes += notes
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


def check_loadable(config: ModelConfig, sd: dict[str, torch.Tensor], where: str) -> MMModel:
    """check_state against a weightless (meta) model of ``config``; returns that model."""
    with torch.device("meta"):
        model = MMModel(config)
    check_state(model, sd, where)
    return model


def build_model(config: ModelConfig, sd: dict[str, torch.Tensor], where: str,
                dtype: torch.dtype | None = None, device=None) -> MMModel:
    model = check_loadable(config, sd, where)
    model = model.to_empty(device=device or "cpu")
    if config.tie_word_embeddings:  # to_empty gives every parameter its own storage: tie the head again
        model.lm_head.weight = model.embed.embed_tokens.weight
    model.load_state_dict(sd, strict=True, assign=False)
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()


def load_model(path: str | Path, config_path: str | Path | None = None, dtype: torch.dtype | None = None,
               device=None, impl: str | None = None, attn_impl: str | None = None) -> tuple[MMModel, LoadInfo]:
    """Runtime choices, never saved: ``impl`` the Mamba scan (auto | torch | kernel), ``attn_impl`` the
    attention (sdpa | eager)."""
    config, sd, info = load_state(path, config_path)
    if impl is not None:
        config.mamba.impl = impl
    model = build_model(config, sd, str(path), dtype, device)
    if attn_impl is not None:
        set_attention_impl(model, attn_impl)
    return model, info
