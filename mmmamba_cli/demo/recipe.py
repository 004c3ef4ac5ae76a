"""The demo's recipe: one typed schema in sections, loaded like every other recipe
(``recipes/demo.yaml`` <- ``key=value`` overrides such as ``eval.limit=500``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class DistillSection:
    recipe: str = "easyvqa"
    """Distillation recipe name or path for every stage (``recipes/<name>-stage{1,2,3}.yaml``)."""
    overrides: list[str] = field(default_factory=list)
    """key=value overrides applied to every stage, e.g. train.steps=20."""


@dataclass
class HybridSection:
    every: int = 4
    """Keep the first layer of every block of this many layers as attention (paper: 4)."""


@dataclass
class EvalSection:
    limit: Optional[int] = None
    """Questions of the easy-vqa test split to evaluate (null: all 9673)."""
    seeded: bool = True
    """Also evaluate the freshly seeded (undistilled) linear student, as a baseline."""


@dataclass
class BenchSection:
    enabled: bool = True
    """Run the short long-context benchmark."""
    tokens: list[int] = field(default_factory=lambda: [1024, 4096, 16384])
    """Context lengths of the benchmark."""


@dataclass
class DemoRecipe:
    teacher: Optional[str] = None
    """Teacher model (default: the embedded tiny HoVLE teacher trained on easy-vqa)."""
    seed: int = 0
    """Seed of the student's new parameters and of the hybrid's re-seeded layers."""
    distill: DistillSection = field(default_factory=DistillSection)
    hybrid: HybridSection = field(default_factory=HybridSection)
    eval: EvalSection = field(default_factory=EvalSection)
    bench: BenchSection = field(default_factory=BenchSection)

    def check(self) -> list[str]:
        e = []
        if self.hybrid.every < 1:
            e.append(f"hybrid.every must be >= 1, got {self.hybrid.every}")
        if self.eval.limit is not None and self.eval.limit < 1:
            e.append(f"eval.limit must be >= 1 or null, got {self.eval.limit}")
        if self.bench.enabled and (not self.bench.tokens or min(self.bench.tokens) < 1):
            e.append(f"bench.tokens must be positive context lengths, got {self.bench.tokens}")
        return e


def demo_recipe_from(name_or_path: str | None, overrides: list[str] | None = None) -> DemoRecipe:
    """``recipes/<name>.yaml`` (or a path) <- overrides, validated."""
    from ..recipe import load_recipe

    return load_recipe(DemoRecipe, name_or_path, overrides or [])
