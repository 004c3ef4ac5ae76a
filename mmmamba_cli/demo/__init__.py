"""The demo: the whole method on the embedded teacher, seed -> distill 1, 2, 3 -> hybrid + stage 3
-> eval -> bench, and one side-by-side report."""
from .recipe import DemoRecipe, demo_recipe_from
from .run import run_demo

__all__ = ["DemoRecipe", "demo_recipe_from", "run_demo"]
