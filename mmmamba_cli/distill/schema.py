"""The distillation recipe: one typed schema shared by the three stages.

Missing values come from the stage's defaults (``stages.STAGES[n].defaults``, the SPEC table),
then the YAML file, then ``key=value`` overrides (see :mod:`mmmamba_cli.recipe`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal, Optional

from ..errors import UserError
from ..model.optim import OptimSection  # shared with the teacher's training
from ..recipe import build, load_recipe, merge, parse_overrides, to_dict


@dataclass
class DataSection:
    path: Optional[str] = None
    """InternVL/VLM-SFT jsonl file, a .txt file, a directory of *.jsonl / *.txt shards, or
    ``easyvqa:train`` / ``easyvqa:test`` (written into the run dir)."""
    image_root: Optional[str] = None
    """Folder that relative image paths start from (default: the jsonl file's folder)."""
    max_length: int = 2048
    """Records longer than this many tokens are skipped and counted (plain text: see long_text)."""
    long_text: Literal["split", "drop"] = "split"
    """Plain-text records over max_length: cut into max_length windows, or skipped and counted."""
    strict: bool = False
    """Stop at the first unreadable record (bad JSON, missing or undecodable image) with its line number."""
    num_workers: int = 0
    """DataLoader worker processes (image decoding)."""
    num_proc: int = 0
    """Processes that build the data index (0: every CPU; small files use one)."""
    cache_dir: Optional[str] = None
    """Folder of the data index (default: the run directory's data/ folder); reused while the data,
    tokenizer, template and max_length are unchanged."""
    pack: bool = False
    """Pack several records into each row of up to max_length tokens (state reset at each boundary)."""


@dataclass
class TrainSection:
    steps: int = 20000
    """Optimizer steps."""
    global_batch: int = 128
    """Sequences per optimizer step over all processes (= micro_batch * processes * accumulation)."""
    micro_batch: int = 4
    """Sequences per forward pass on one process."""
    precision: Literal["no", "bf16", "fp16"] = "bf16"
    """Autocast precision; master weights stay fp32."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto: CUDA when available, else CPU (multi-process CPU runs use gloo)."""
    seed: int = 0
    """Seeds the data order and every RNG."""
    threads: int = 0
    """CPU threads per process for torch (0: leave torch's default)."""
    save_every: int = 1000
    """Write a checkpoint every this many steps (0: only the final model)."""
    keep_checkpoints: int = 2
    """Most recent checkpoints kept while the stage runs; all are removed once the stage finishes."""
    divergence_factor: float = 10.0
    """Stop when the loss exceeds this many times the median of the recent losses (0: only inf/nan stop)."""
    trains: Optional[list[str]] = None
    """Mamba-2 mixer roles that train, replacing the stage's set (names in ``stages.ROLES``, e.g.
    ``[conv1d, dt_proj, dt_bias, A_log, z_proj, norm, C_proj, B_proj, x_proj, out_proj]``); null: the stage's."""
    activation_checkpointing: bool = False
    """Recompute each student layer's activations in the backward instead of keeping them (less memory,
    about one more forward of time)."""
    sharding: Literal["none", "fsdp"] = "none"
    """fsdp: with more than one process, shard the student's parameters, gradients and AdamW state
    over the processes (FSDP2, one unit per decoder layer; ``distill/sharding.py``); the teacher stays
    replicated. Also on when accelerate's config is FSDP. Results equal an unsharded run's."""


@dataclass
class LossSection:
    mse_factor: float = 1000.0
    """Stages 1-2: scale of the layer-wise MSE (averaged over Mamba layers and non-pad tokens)."""
    temperature: float = 1.0
    """Stage 3: softmax temperature of KL(teacher || student); the KL is multiplied by T^2."""
    kl_tokens: Literal["all", "labels"] = "all"
    """Stage 3: positions averaged in the KL: every non-pad position, or only those predicting a label."""
    ce_weight: float = 0.0
    """Stage 3: weight of a next-token cross-entropy on the labels, added to the KL."""


@dataclass
class DistillRecipe:
    stage: Optional[int] = None
    """The stage this recipe is written for (checked against --stage); null: any stage."""
    teacher: Optional[str] = None
    """Teacher model path (default: the ``source.teacher`` recorded in the student's config.json)."""
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    train: TrainSection = field(default_factory=TrainSection)
    loss: LossSection = field(default_factory=LossSection)

    def check(self) -> list[str]:
        """Semantic errors (the types are already checked)."""
        e, t = list(self.optim.check()), self.train  # the optimizer's own checks (model/optim.py)
        positive = {"train.steps": t.steps, "train.global_batch": t.global_batch,
                    "train.micro_batch": t.micro_batch, "data.max_length": self.data.max_length,
                    "loss.temperature": self.loss.temperature}
        e += [f"{k} must be > 0, got {v}" for k, v in positive.items() if not v > 0]
        if t.micro_batch > 0 and t.global_batch % t.micro_batch:
            e.append(f"train.global_batch {t.global_batch} is not a multiple of train.micro_batch {t.micro_batch}")
        e += [f"{k} must be >= 0, got {v}" for k, v in {
            "train.save_every": t.save_every, "data.num_workers": self.data.num_workers,
            "data.num_proc": self.data.num_proc, "loss.ce_weight": self.loss.ce_weight, "train.threads": t.threads,
            "train.divergence_factor": t.divergence_factor, "loss.mse_factor": self.loss.mse_factor}.items() if v < 0]
        if t.keep_checkpoints < 1:
            e.append(f"train.keep_checkpoints must be >= 1, got {t.keep_checkpoints}")
        from .stages import check_roles

        e += check_roles(t.trains)
        if self.stage is not None and self.stage not in (1, 2, 3):
            e.append(f"stage must be 1, 2 or 3, got {self.stage}")
        return e


TEXT_RECIPE = "llm"
"""Recipe used when none is named and the student is text-only (no vision tower)."""
STAGE_KEY = re.compile(r"stage([0-9]+)\.(.+)")


def default_recipe(config) -> str | None:
    """The recipe a student gets without ``--recipe``: ``llm`` for a text-only model, else None
    (the stage's defaults, the paper's HoVLE values)."""
    return TEXT_RECIPE if getattr(config, "vision", None) is None else None


def split_stage_overrides(overrides, stages) -> tuple[list[str] | dict | None, dict[int, list[str]]]:
    """``["stage1.train.steps=5", "optim.lr=1e-3"]`` -> (overrides for every stage, {1: ["train.steps=5"]}).

    A ``stageN.`` key for a stage that does not run is an error (it would be silently unused).
    """
    from ..errors import UserError

    if not overrides or isinstance(overrides, dict):
        return overrides, {}
    common, per = [], {}
    for item in overrides:
        m = STAGE_KEY.match(item.partition("=")[0].strip())
        if m is None:
            common.append(item)
            continue
        n = int(m.group(1))
        if n not in stages:
            runs = ", ".join(map(str, stages))
            raise UserError(f"override {item!r} is for stage {n}, which does not run (stages: {runs})")
        per.setdefault(n, []).append(item.strip()[len(f"stage{n}."):])
    return common, per


def resolve_recipe(stage, recipe=None, overrides=None) -> DistillRecipe:
    """A validated recipe for ``stage``: its defaults <- ``recipe`` <- ``overrides``.

    ``recipe``: None, a name (``tiny`` finds ``recipes/tiny-stage{N}.yaml``, else ``tiny.yaml``),
    a path, a dict, or a DistillRecipe (used as is, then overridden).
    """
    if isinstance(recipe, DistillRecipe):
        r = build(DistillRecipe, merge(to_dict(recipe), parse_overrides(overrides)))
    elif isinstance(recipe, dict):
        r = build(DistillRecipe, merge(merge(stage.defaults, recipe), parse_overrides(overrides)))
    else:
        name = None if recipe is None else str(recipe)
        r = load_recipe(DistillRecipe, name, overrides, base=stage.defaults,
                        candidates=(f"{name}-stage{stage.number}", f"{name}") if name else ())
    if r.stage is not None and r.stage != stage.number:
        raise UserError(f"recipe {recipe} is written for stage {r.stage}, not stage {stage.number}")
    return r
