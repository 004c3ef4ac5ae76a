"""Seeding: carve a Mamba-2 mixer out of every converted attention layer (SPEC section 2).

A declarative map says which teacher tensor becomes which student tensor; new parameters
come from :meth:`Mamba2.reset_new_parameters`. Every move and every new tensor is reported.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from .errors import UserError
from .io.files import check_output_dir
from .io.load import check_state, load_state
from .io.save import git_sha, save_model_dir
from .model.config import ATTENTION, MAMBA, ModelConfig
from .model.layout import layer_types_for, parse_layer_list
from .model.mamba2 import Mamba2
from .model.model import MMModel

# attention role -> Mamba-2 role, inside ``layers.{i}.``
SEED_MAP = {
    "mixer.q_proj": "mixer.C_proj",   # query -> C
    "mixer.k_proj": "mixer.B_proj",   # key   -> B
    "mixer.v_proj": "mixer.x_proj",   # value -> x
    "mixer.o_proj": "mixer.out_proj",  # output projection
}
NEW_INIT = {
    "conv1d.weight": "identity (tap on the current token = 1, other taps 0)",
    "conv1d.bias": "zeros",
    "dt_proj.weight": "zeros",
    "dt_bias": "inverse softplus of dt ~ exp(U(ln dt_min, ln dt_max)), dt >= dt_init_floor",
    "A_log": "constant A_init (A = -exp(A_init))",
    "z_proj.weight": "xavier_uniform, gain gate_gain",
    "norm.weight": "ones",
}


def seed_state(teacher: ModelConfig, sd: dict[str, torch.Tensor], layer_types: list[str], seed: int = 0):
    """Pure function: teacher state (our names) -> (student config, student state, report)."""
    if len(layer_types) != teacher.num_layers:
        raise ValueError(f"{len(layer_types)} layer types for {teacher.num_layers} layers")
    config = dataclasses.replace(teacher, layer_types=list(layer_types), mamba=dataclasses.replace(teacher.mamba))
    out: dict[str, torch.Tensor] = {}
    report = {"moved": [], "kept": [], "new": []}
    mamba_prefixes = [f"layers.{i}." for i, t in enumerate(layer_types) if t == MAMBA]
    for name, t in sd.items():
        prefix = next((p for p in mamba_prefixes if name.startswith(p)), None)
        role = None if prefix is None else next((r for r in SEED_MAP if name.startswith(prefix + r + ".")), None)
        if role is None:
            out[name] = t
            report["kept"].append(name)
            continue
        dst = prefix + SEED_MAP[role] + name[len(prefix + role):]
        if dst in out:
            raise ValueError(f"two sources map to {dst}")
        out[dst] = t.clone()
        report["moved"].append({"src": name, "dst": dst, "shape": list(t.shape)})
    gen = torch.Generator().manual_seed(seed)
    for i, kind in enumerate(layer_types):
        if kind != MAMBA:
            continue
        mixer = Mamba2(config.hidden_size, config.shape(i), config.mamba)
        mixer.reset_new_parameters(gen)
        for pname, init in NEW_INIT.items():
            t = mixer.state_dict()[pname].to(sd[f"layers.{i}.mixer.q_proj.weight"].dtype)
            out[f"layers.{i}.mixer.{pname}"] = t
            report["new"].append({"name": f"layers.{i}.mixer.{pname}", "shape": list(t.shape), "init": init})
    report["layer_types"] = list(layer_types)
    report["attention_layers"] = [i for i, k in enumerate(layer_types) if k == ATTENTION]
    return config, out, report


def seed_directory(teacher_path, out, attn_layers=None, config_path=None, force: bool = False, seed: int = 0,
                   log=None) -> dict:
    """Load a teacher, seed a student (hybrid when ``attn_layers`` keeps some layers), write ``out``.

    Returns the seed report (also written to ``out/seed_report.json``).
    """
    check_output_dir(Path(out), force)
    teacher, sd, info = load_state(teacher_path, config_path)
    if teacher.mamba_layers:
        raise UserError(f"{teacher_path} already has Mamba layers {teacher.mamba_layers}; seed needs an "
                        "all-attention teacher (use `mmmamba hybridize` to change a student's layout)")
    keep = parse_layer_list(attn_layers, teacher.num_layers)
    with torch.device("meta"):
        check_state(MMModel(teacher), sd, str(teacher_path))
    config, state, report = seed_state(teacher, sd, layer_types_for(keep, teacher.num_layers), seed)
    config.source = {"teacher": str(Path(teacher_path).resolve()), "teacher_format": info.format,
                     "teacher_config": str(Path(config_path).resolve()) if config_path else None,
                     "seed": seed}
    report.update(teacher=str(teacher_path), notes=info.notes)
    resolved = {"command": "seed", "teacher": str(teacher_path), "out": str(out), "attn_layers": keep,
                "config": str(config_path) if config_path else None, "seed": seed, "git_sha": git_sha()}
    for line in info.notes:
        if log:
            log(line)
    save_model_dir(out, config, state, info.tokenizer_dir,
                   {"seed_report.json": report, "resolved.json": resolved}, force=force)
    return report
