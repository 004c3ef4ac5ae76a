"""The three distillation stages as data (SPEC section 3 table).

A stage says where its student comes from, which Mamba-2 mixer roles train (everything else,
kept attention layers included, stays frozen), which objective it minimises and its default
hyper-parameters. The training loop never asks which stage is running.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from torch import nn

from ..errors import UserError

# Mamba-2 mixer roles (first component of a parameter name inside ``layers.{i}.mixer``)
NEW = ("conv1d", "dt_proj", "dt_bias", "A_log", "z_proj", "norm")  # parameters attention does not have
INHERITED_QKV = ("C_proj", "B_proj", "x_proj")  # W_Q, W_K, W_V
ROLES = NEW + INHERITED_QKV + ("out_proj",)  # out_proj = W_O


@dataclass(frozen=True)
class Stage:
    number: int
    source: str
    """Run-directory entry holding the student this stage starts from."""
    trains: tuple[str, ...]
    """Mamba-2 mixer roles that train."""
    objective: str
    """Key of ``objectives.OBJECTIVES``."""
    defaults: dict = field(default_factory=dict)
    """Recipe values of the paper (nested like the recipe)."""

    @property
    def name(self) -> str:
        return f"stage{self.number}"

    def with_roles(self, roles) -> "Stage":
        """This stage training ``roles`` (a recipe's ``train.trains``) instead; None: unchanged."""
        if not roles:
            return self
        errors = check_roles(roles)
        if errors:
            raise UserError(errors[0])
        return replace(self, trains=tuple(roles))

    def trainable(self, model: nn.Module) -> dict[str, nn.Parameter]:
        """Parameters of ``model`` (an MMModel) that train in this stage, by state-dict name."""
        out = {}
        for i in model.config.mamba_layers:
            for pname, p in model.layers[i].mixer.named_parameters():
                role = pname.split(".")[0]
                if role not in ROLES:
                    raise ValueError(f"Mamba-2 parameter {pname} has no role in stages.ROLES")
                if role in self.trains:
                    out[f"layers.{i}.mixer.{pname}"] = p
        return out


def check_roles(roles) -> list[str]:
    """The recipe error for names in ``roles`` (``train.trains``) that are not Mamba-2 roles, if any."""
    unknown = sorted(set(roles or ()) - set(ROLES))
    return [f"train.trains: unknown Mamba-2 role(s) {', '.join(unknown)}; choose from {', '.join(ROLES)}"] \
        if unknown else []


def _defaults(lr: float, steps: int, global_batch: int) -> dict:
    return {"optim": {"lr": lr, "betas": [0.9, 0.999], "weight_decay": 0.05, "warmup": 0.1, "decay": 0.1},
            "train": {"steps": steps, "global_batch": global_batch, "precision": "bf16"},
            "loss": {"mse_factor": 1000.0, "temperature": 1.0}}


STAGES: dict[int, Stage] = {
    # stage 1: only the new parameters learn to mimic each attention layer
    1: Stage(1, "seed", NEW, "layerwise", _defaults(1e-3, 20_000, 128)),
    # stage 2: W_Q/W_K/W_V join; the teacher path keeps its own frozen copy
    2: Stage(2, "stage1", NEW + INHERITED_QKV, "layerwise", _defaults(5e-4, 20_000, 128)),
    # stage 3: end-to-end KL; the research code leaves A_log, dt_bias and W_O out
    3: Stage(3, "stage2", INHERITED_QKV + ("conv1d", "dt_proj", "z_proj", "norm"), "kl",
             _defaults(5e-5, 20_000, 64)),
}


def get_stage(number: int) -> Stage:
    if number not in STAGES:
        raise UserError(f"unknown stage {number}; choose 1, 2, 3 or all")
    return STAGES[number]
