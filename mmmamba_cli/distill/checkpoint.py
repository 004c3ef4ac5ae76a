"""Training checkpoints, written atomically: ``WORK/checkpoints/step-00000100/``

- ``trainable.safetensors``: the tensors this stage trains (the rest is the stage's input model)
- ``state.pt``: optimizer, scheduler, the RNG states of every process, the step
- ``state.json``: step, metrics lines written so far, samples seen (human-readable)

The data position is the step itself: ``data.BatchPlan`` makes every batch a function of it.
"""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from ..errors import UserError
from ..io.files import atomic_dir, load_pickle, read_safetensors, write_json_atomic

PREFIX = "step-"


def checkpoint_dir(work: Path, step: int) -> Path:
    return Path(work) / "checkpoints" / f"{PREFIX}{step:08d}"


def list_checkpoints(work: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary directories start with a dot and are skipped)."""
    root = Path(work) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob(f"{PREFIX}*") if (p / "state.json").exists())


def rng_state() -> dict:
    """Every RNG of this process as plain Python values (bytes, ints), so processes can exchange them."""
    name, keys, *rest = np.random.get_state()
    return {"python": random.getstate(), "torch": _bytes(torch.get_rng_state()),
            "numpy": (name, keys.tolist(), *rest),
            "cuda": [_bytes(t) for t in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else []}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(_tensor(state["torch"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_tensor(b) for b in state["cuda"]])


def _bytes(t: torch.Tensor) -> bytes:
    return bytes(t.cpu().numpy())


def _tensor(b: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(b), dtype=torch.uint8)


def save_checkpoint(work: Path, step: int, trainable: dict[str, torch.Tensor], optimizer_state: dict, scheduler,
                    rng_states: list[dict], metrics_lines: int, keep: int, info: dict | None = None) -> Path:
    """Write checkpoint ``step`` atomically, then drop all but the ``keep`` newest.

    ``trainable`` and ``optimizer_state`` (an ``optimizer.state_dict()``) hold full tensors, also
    after a sharded run (``sharding`` gathers them), so any process count resumes from it."""
    out = checkpoint_dir(work, step)
    with atomic_dir(out, force=True) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in trainable.items()}, str(tmp / "trainable.safetensors"))
        torch.save({"optimizer": optimizer_state, "scheduler": scheduler.state_dict(),
                    "rng": rng_states, "step": step}, tmp / "state.pt")
        write_json_atomic(tmp / "state.json", {"step": step, "metrics_lines": metrics_lines,
                                               "processes": len(rng_states), **(info or {})})
    for old in list_checkpoints(work)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return out


def load_checkpoint(path: Path) -> dict:
    """{"trainable", "optimizer", "scheduler", "rng", "step", "metrics_lines"}; a damaged checkpoint
    is a one-line UserError."""
    path = Path(path)
    state = load_pickle(path / "state.pt")
    try:
        if not isinstance(state, dict) or not {"optimizer", "scheduler", "rng", "step"} <= set(state):
            raise KeyError("state.pt lacks optimizer/scheduler/rng/step")
        state["metrics_lines"] = int(json.loads((path / "state.json").read_text())["metrics_lines"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"checkpoint {path} is damaged ({type(e).__name__}: {e}); delete it to resume from an "
                        f"earlier one, or start over with --force") from None
    state["trainable"] = read_safetensors(path / "trainable.safetensors")
    return state
