"""``mmmamba distill --dry-run``: memory per process and tokens per step of a stage, without training.

Parameters, gradients and AdamW state come from the configs (the models are built on the meta
device: no weights are read). Activations are measured, not guessed: one layer of each kind
present (Mamba-2, attention) is built at its real width and run on a probe sequence under
``saved_tensors_hooks``; the bytes it saves for the backward, per token, are scaled to the
micro-batch (``micro_batch x max_length`` tokens, the padded worst case) and the layer count.
Added to that: what the objective holds besides (the teacher's per-layer inputs and targets in
stages 1-2; hidden states and the chunked-KL temporaries in stage 3) and the Python/torch runtime
of this process as measured now. DDP replicates everything on every process; with
``train.sharding=fsdp`` (FSDP2, ``sharding``) the student's parameters, gradients and optimizer
state are divided by the process count, plus the full units gathered while they run (the root and
two decoder layers: the running one and the prefetched next). The teacher is replicated either way.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import UserError
from .schema import DistillRecipe
from .stages import Stage

PROBE_TOKENS = 256
BYTES = {"bf16": 2, "fp16": 2, "no": 4}


@dataclass
class Estimate:
    stage: str
    processes: int
    tokens_per_micro_batch: int
    tokens_per_step: int
    bytes: dict[str, int] = field(default_factory=dict)  # per process
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.bytes.values())

    def lines(self) -> list[str]:
        out = [f"{self.stage}: {self.processes} process(es); tokens per micro-batch <= "
               f"{self.tokens_per_micro_batch:,}, per optimizer step <= {self.tokens_per_step:,}"]
        out += [f"  {k:<22} {v / 2**20:>12,.1f} MiB" for k, v in self.bytes.items()]
        out.append(f"  {'total per process':<22} {self.total / 2**20:>12,.1f} MiB")
        return out + [f"  note: {n}" for n in self.notes]


def estimate(stage: Stage, r: DistillRecipe, student_config, teacher_config, processes: int = 1,
             longest: int | None = None) -> Estimate:
    """The per-process memory of running ``stage`` with recipe ``r`` on ``processes`` processes (DDP,
    or the student sharded when ``r.train.sharding`` is fsdp).

    ``longest``: the longest record of the data (from its index), which bounds a padded row;
    without it every row is taken to be ``data.max_length`` tokens (the worst case).
    """
    from ..model.model import MMModel

    if processes < 1:
        raise UserError(f"--processes {processes}: need at least 1")
    t = r.train
    if t.global_batch % (t.micro_batch * processes):
        raise UserError(f"train.global_batch {t.global_batch} is not a multiple of train.micro_batch "
                        f"{t.micro_batch} x {processes} process(es)")
    with torch.device("meta"):
        student, teacher = MMModel(student_config), MMModel(teacher_config)
    trainable = sum(p.numel() for p in stage.trainable(student).values())
    n_student, n_teacher = (sum(p.numel() for p in m.parameters()) for m in (student, teacher))
    row = r.data.max_length if longest is None or r.data.pack else min(longest, r.data.max_length)
    tokens = t.micro_batch * row
    e = Estimate(stage.name, processes, tokens, t.global_batch * row)
    shards = processes if t.sharding == "fsdp" else 1
    e.bytes["student parameters"] = 4 * n_student // shards  # fp32 master weights
    if shards > 1:
        layers = [sum(p.numel() for p in layer.parameters()) for layer in student.layers]
        e.bytes["FSDP gathered units"] = 4 * (n_student - sum(layers) + 2 * max(layers))
    e.bytes["teacher parameters"] = BYTES[t.precision] * n_teacher
    e.bytes["gradients"] = 4 * trainable // shards
    e.bytes["optimizer (AdamW)"] = 8 * trainable // shards
    e.bytes["activations"] = _activations(stage, r, student_config, tokens)
    e.bytes["runtime (measured)"] = _runtime_rss()
    e.notes.append(f"{trainable:,} of {n_student:,} student parameters train; teacher {n_teacher:,} frozen")
    e.notes.append(f"rows of {row:,} tokens: " + ("the longest record in the data index" if row != r.data.max_length
                   else "data.max_length (the worst case; an existing data index gives the real longest record)"))
    if shards > 1:
        e.notes.append(f"FSDP: student parameters, gradients and AdamW state split over {shards} processes")
    if r.train.activation_checkpointing:
        e.notes.append("activation checkpointing: layer inputs kept, one layer's activations at a time")
    return e


def _activations(stage: Stage, r: DistillRecipe, config, tokens: int) -> int:
    from ..model.config import ATTENTION
    from ..ops.divergence import head_chunk

    mix_only = stage.objective == "layerwise"
    kinds = {}
    for i, kind in enumerate(config.layer_types):
        if mix_only and kind == ATTENTION:
            continue  # kept attention layers are not trained in stages 1-2
        kinds.setdefault(kind, []).append(i)
    per_token = {k: _saved_per_token(config, idx[0], mix_only, r.train.precision) for k, idx in kinds.items()}
    c, elem = config.hidden_size, 4
    if r.train.activation_checkpointing:
        layers = sum(len(v) for v in kinds.values()) * c * elem + max(per_token.values())
    else:
        layers = sum(per_token[k] * len(v) for k, v in kinds.items())
    total = layers * tokens
    t_bytes = BYTES[r.train.precision]
    if mix_only:  # the teacher's trace: each trained layer's input (C) and target (h*d) per token
        held = sum(c + config.shape(i).num_heads * config.shape(i).head_dim for i in config.mamba_layers)
        total += held * t_bytes * tokens
    else:  # both models' final hidden states and the chunked KL's (chunk, V) fp32 temporaries
        chunk = min(head_chunk(config.vocab_size), tokens)
        total += 2 * c * elem * tokens + 6 * chunk * config.vocab_size * 4
    return int(total)


def _saved_per_token(config, index: int, mix_only: bool, precision: str) -> float:
    """Bytes one layer saves for the backward per token (measured on a probe sequence)."""
    from ..model.model import DecoderLayer, MMModel

    layer = DecoderLayer(config, index)
    rope_model = MMModel.__new__(MMModel)  # layer_inputs() needs only the config
    rope_model.config = config
    ids = torch.zeros(1, PROBE_TOKENS, dtype=torch.long)
    inputs = MMModel.layer_inputs(rope_model, ids)
    rope, key_mask, valid = inputs.rope(index), inputs.key_mask, inputs.valid
    h = torch.randn(1, PROBE_TOKENS, config.hidden_size, requires_grad=True)
    params = {p.untyped_storage().data_ptr() for p in layer.parameters()}
    seen: dict[int, int] = {}

    def pack(x):
        ptr = x.untyped_storage().data_ptr()
        if ptr not in params:
            seen[ptr] = x.untyped_storage().nbytes()
        return x

    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x), \
            torch.autocast("cpu", dtype=dtype, enabled=precision != "no"):
        out = layer.mix(h, rope, key_mask, valid, None) if mix_only else layer(h, rope, key_mask, valid)
    seen[out.untyped_storage().data_ptr()] = out.untyped_storage().nbytes()
    return sum(seen.values()) / PROBE_TOKENS


def _runtime_rss() -> int:
    """This process's RSS once the libraries a training process loads are imported."""
    import accelerate  # noqa: F401  - imported for their memory, as training imports them
    import datasets  # noqa: F401
    import transformers  # noqa: F401

    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def estimate_run(run_dir: str | Path, stage_number: int, recipe=None, overrides=None, processes: int = 1,
                 teacher: str | Path | None = None) -> Estimate:
    """``estimate`` for a stage inside a run directory (reads only config.json files)."""
    from ..io.load import config_from_json, read_config_json
    from .run_dir import check_run_dir, cli_overrides
    from .schema import resolve_recipe
    from .stages import get_stage

    run_dir, st = Path(run_dir), get_stage(stage_number)
    check_run_dir(run_dir)
    source = run_dir / st.source if (run_dir / st.source / "config.json").exists() else run_dir / "seed"
    if not (source / "config.json").exists():
        raise UserError(f"{run_dir} has no seed/ model; create it with `mmmamba seed -r {run_dir}`")
    r = resolve_recipe(st, recipe, cli_overrides(overrides=overrides))
    config = config_from_json(read_config_json(source / "config.json"), source / "config.json")
    teacher_dir = Path(teacher or r.teacher or config.source.get("teacher") or "")
    if not (teacher_dir / "config.json").exists():
        raise UserError(f"teacher {teacher_dir} not found; pass --teacher PATH")
    teacher_config = config_from_json(read_config_json(teacher_dir / "config.json"), teacher_dir / "config.json")
    from ..io.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(source)  # also part of the runtime a training process holds
    return estimate(st.with_roles(r.train.trains), r, config, teacher_config, processes, _longest_record(run_dir, r, tokenizer, config))


def _longest_record(run_dir: Path, r: DistillRecipe, tokenizer, config) -> int | None:
    """The longest record of the recipe's data, when its index is already built (else None)."""
    from ..data import IndexSettings, index_dir, open_index
    from .data import EASYVQA_PREFIX

    spec = r.data.path
    if not spec:
        return None
    path = run_dir / "data" / f"easyvqa-{spec[len(EASYVQA_PREFIX):]}.jsonl" if spec.startswith(EASYVQA_PREFIX) \
        else Path(spec)
    if not path.exists():
        return None
    settings = IndexSettings(r.data.image_root, r.data.max_length, r.data.long_text, r.data.strict)
    directory = index_dir(path, tokenizer, config, settings, Path(r.data.cache_dir or run_dir / "data"))
    if not (directory / "stats.json").exists():
        return None
    lengths = open_index(directory, config)[0].lengths
    return max(lengths) if lengths else None
