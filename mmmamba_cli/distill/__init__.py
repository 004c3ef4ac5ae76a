"""Three-stage distillation of a seeded Mamba-2 student (SPEC section 3).

Python entry points: :func:`run_stage` / :func:`run_stages` inside a run directory, and
:func:`distill_model` on any (student, teacher, output) triple.
"""
from .loop import NonFiniteLoss, StepReport
from .pipeline import distill_model
from .run_dir import run_stage, run_stages
from .schema import DistillRecipe, resolve_recipe
from .stages import STAGES, Stage

__all__ = ["STAGES", "DistillRecipe", "NonFiniteLoss", "Stage", "StepReport", "distill_model", "resolve_recipe",
           "run_stage", "run_stages"]
