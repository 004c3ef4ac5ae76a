"""The divergence guard: stop at a non-finite or exploding loss, and name a checkpoint that is good.

A checkpoint written after update ``s`` holds the weights that produce the loss of step ``s + 1``;
it counts as good only once that loss was seen finite and not exploded. So when step ``t`` blows
up, the checkpoint of step ``t - 1`` (if any) is suspect: it is renamed ``suspect-step-...`` so that
``--resume`` cannot pick it, and the message names the newest checkpoint before it. Saved weights
are checked to be finite before a checkpoint is written. "Exploded" means the loss exceeds
``train.divergence_factor`` times the median of the recent finite losses (0 turns that test off).
"""
from __future__ import annotations

import json
import math
import statistics
from collections import deque
from pathlib import Path

import torch

from ..errors import UserError
from .checkpoint import PREFIX, list_checkpoints

SUSPECT = "suspect-"
MARKER = "diverged.json"
WINDOW = 50
# recipe keys a resume after a divergence may change (the usual remedy: a lower learning rate)
AFTER_DIVERGENCE = {"optim.lr", "optim.grad_clip", "train.divergence_factor"}


class NonFiniteLoss(UserError):
    """The loss, the gradient norm or the weights became inf/nan (or the loss exploded); the last
    good checkpoint is kept and named."""


class DivergenceGuard:
    """Watches one stage's losses; ``check`` raises NonFiniteLoss at the first bad one."""

    def __init__(self, stage_name: str, work: Path, factor: float, main: bool = True, window: int = WINDOW):
        self.stage_name, self.work, self.factor, self.main = stage_name, Path(work), factor, main
        self.recent: deque[float] = deque(maxlen=window)

    def check_loss(self, step: int, loss: float) -> None:
        if not math.isfinite(loss):
            raise self.stop(step, f"non-finite loss ({loss})")
        if self.factor > 0 and self.recent:
            median = statistics.median(self.recent)
            if median > 0 and loss > self.factor * median:
                raise self.stop(step, f"the loss exploded ({loss:.4g}, over {self.factor:g} x its running "
                                      f"median {median:.4g}; train.divergence_factor)")
        self.recent.append(loss)

    def check_grad(self, step: int, grad_norm: float) -> None:
        if not math.isfinite(grad_norm):
            raise self.stop(step, f"non-finite gradient norm ({grad_norm})")

    def check_weights(self, step: int, params: dict[str, torch.Tensor]) -> None:
        """Before a checkpoint of ``step``: every trained tensor must be finite."""
        bad = [name for name, p in params.items() if not bool(torch.isfinite(p.detach()).all())]
        if bad:
            raise self.stop(step + 1, f"non-finite weights after update {step} ({', '.join(bad[:3])})")

    def stop(self, step: int, what: str) -> NonFiniteLoss:
        """Set suspect checkpoints aside, record the event, and build the one-line message."""
        good = set_aside_suspects(self.work, step, rename=self.main)
        if good is not None:
            keep = (f"the last good checkpoint is {good} (step {_step(good)}, before the blow-up); continue "
                    f"from it with --resume and a lower optim.lr, or start over with --force")
        else:
            keep = "no checkpoint predates it; run the stage again with a lower optim.lr"
        if self.main and self.work.is_dir():
            (self.work / MARKER).write_text(json.dumps({"step": step, "what": what, "good": str(good or "")}) + "\n")
        return NonFiniteLoss(f"{self.stage_name}: {what} at step {step}; stopped before the optimizer step, {keep}")


def set_aside_suspects(work: Path, step: int, rename: bool = True) -> Path | None:
    """Rename checkpoints of step >= ``step - 1`` (their weights made the bad loss; only the main
    process renames); returns the newest checkpoint before them."""
    good = None
    for path in list_checkpoints(work):
        if _step(path) < step - 1:
            good = path
        elif rename:
            path.rename(path.with_name(SUSPECT + path.name))
    return good


def _step(path: Path) -> int:
    return int(Path(path).name.removeprefix(SUSPECT).removeprefix(PREFIX))


def diverged_before(work: Path) -> bool:
    return (Path(work) / MARKER).is_file()
