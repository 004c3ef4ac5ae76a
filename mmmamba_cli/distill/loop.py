"""One training loop for every stage, on accelerate.

Per step: fetch this process's micro-batches, count the tokens that normalise every loss term
over the whole global batch (all micro-batches, all processes), then for each micro-batch run
the teacher side (no gradient) and the student side, and back-propagate
``sum_t w_t * sum_t(micro-batch) / N_t * processes`` (DDP averages over processes), syncing
gradients only on the last micro-batch. With ``train.sharding=fsdp`` the student is sharded
over the processes instead of replicated (``sharding``); the steps and their numbers are the same.
Then clip, step AdamW and the WSD schedule, write a
metrics line and, every ``save_every`` steps, a checkpoint. A non-finite or exploding loss, a
non-finite gradient norm or non-finite weights stop the run before the optimizer step, naming the
step and the last good checkpoint (``guard``).
"""
from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..data import RecordError
from ..errors import UserError
from ..model.optim import make_optimizer, wsd_scheduler
from .checkpoint import list_checkpoints, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .checkpointing import checkpoint_layers
from .data import BatchPlan, make_loader
from .guard import DivergenceGuard, NonFiniteLoss  # noqa: F401 - NonFiniteLoss is part of this module's API
from .losses import nonpad_mask
from . import sharding
from .objectives import OBJECTIVES
from .schema import DistillRecipe, TrainSection
from .stages import Stage

METRICS = "metrics.jsonl"


@dataclass
class StepReport:
    """Handed to the progress callback after every step (main process only)."""

    stage: str
    step: int
    steps: int
    loss: float
    lr: float
    tokens_per_s: float
    elapsed_s: float
    eta_s: float
    terms: dict = field(default_factory=dict)


@dataclass
class TrainJob:
    stage: Stage
    recipe: DistillRecipe
    student: torch.nn.Module
    teacher: torch.nn.Module
    dataset: torch.utils.data.Dataset
    work: Path
    pad_token_id: int


def make_accelerator(train: TrainSection):
    """An Accelerator for these settings (CPU multi-process runs use gloo)."""
    from accelerate import Accelerator  # deferred: slow to import
    from accelerate.state import AcceleratorState

    cpu = train.device == "cpu" or (train.device == "auto" and not torch.cuda.is_available())
    shared = AcceleratorState._shared_state
    device = shared.get("device")
    if shared and (shared.get("_mixed_precision") != train.precision or (cpu and device is not None
                                                                         and device.type != "cpu")):
        AcceleratorState._reset_state()  # a later stage in this process asks for other settings
    return Accelerator(mixed_precision=train.precision, cpu=cpu)


def train(job: TrainJob, accelerator, resume: bool = False,
          progress: Callable[[StepReport], None] | None = None, log: Callable[[str], None] | None = None) -> dict:
    """Train ``job.student`` in place for ``recipe.train.steps`` steps; returns a summary."""
    r, stage = job.recipe, job.stage
    params, module, optimizer, scheduler, sharded = _setup(job, accelerator, log)
    world, rank = accelerator.num_processes, accelerator.process_index
    plan = BatchPlan(len(job.dataset), r.train.global_batch, r.train.micro_batch, world, r.train.seed)
    metrics = Path(job.work) / METRICS
    start = _resume(job, params, module, optimizer, scheduler, rank, metrics, accelerator, log, sharded) \
        if resume else 0
    batches = iter(make_loader(job.dataset, plan, start, r.train.steps, rank, job.pad_token_id, r.data.num_workers,
                               r.data.max_length if r.data.pack else None))
    weights = OBJECTIVES[stage.objective].weights(r.loss)
    guard = DivergenceGuard(stage.name, job.work, r.train.divergence_factor, accelerator.is_main_process)
    t0, tokens_seen, last = time.perf_counter(), 0.0, {}
    for step in range(start, r.train.steps):
        tic = time.perf_counter()
        micro = [_to(_next(batches, stage), accelerator.device) for _ in range(plan.accum)]
        values, n_tok = _accumulate(job, module, micro, accelerator, sharded)
        total = sum(w * values[t] for t, w in weights.items() if w)
        lr = scheduler.get_last_lr()[0]
        guard.check_loss(step + 1, total)
        grad_norm = _clip(accelerator, params, r.optim.grad_clip, sharded)
        guard.check_grad(step + 1, grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        dt, tokens_seen = time.perf_counter() - tic, tokens_seen + n_tok
        last = {"step": step + 1, "loss": total, **values, "lr": lr, "grad_norm": grad_norm,
                "tokens": int(n_tok), "tokens_per_s": n_tok / max(dt, 1e-9), "step_s": dt}
        if accelerator.is_main_process:
            with metrics.open("a") as f:
                f.write(json.dumps(last) + "\n")
        if r.train.save_every and (step + 1) % r.train.save_every == 0 and step + 1 < r.train.steps:
            trained = sharding.full_tensors(params) if sharded else params  # every process gathers
            guard.check_weights(step + 1, trained)
            opt_state = sharding.full_optimizer_state(module, optimizer) if sharded else optimizer.state_dict()
            _save(job, trained, opt_state, scheduler, step + 1, accelerator)
        if progress is not None and accelerator.is_main_process:
            elapsed = time.perf_counter() - t0
            eta = elapsed / (step + 1 - start) * (r.train.steps - step - 1)
            progress(StepReport(stage.name, step + 1, r.train.steps, total, lr, tokens_seen / max(elapsed, 1e-9),
                                elapsed, eta, values))
    accelerator.wait_for_everyone()
    from accelerate.utils import gather_object  # deferred: slow to import

    return {"steps": r.train.steps, "resumed_from": start, "final": last,
            "train_seconds": time.perf_counter() - t0, "processes": world,
            "sharding": "fsdp" if sharded else "none",
            "local_param_fraction": gather_object([sharding.local_fraction(job.student)])}


def _setup(job: TrainJob, accelerator, log=None):
    """Freeze all but the stage's parameters; build the objective module, AdamW, WSD; prepare them
    for DDP, or shard the student (FSDP2, nothing prepared). The last value says whether it is sharded."""
    r, stage = job.recipe, job.stage
    params = stage.trainable(job.student)
    if not params:
        raise UserError(f"{stage.name}: the student has no Mamba-2 layer, nothing to train")
    job.student.requires_grad_(False)
    for p in params.values():
        p.requires_grad_(True)
    job.teacher.requires_grad_(False).eval().to(accelerator.device)
    if r.train.activation_checkpointing:
        checkpoint_layers(job.student, OBJECTIVES[stage.objective].layer_call)
    module = OBJECTIVES[stage.objective].student(job.student, r.loss)
    sharded = sharding.wanted(r.train.sharding, r.train.precision, accelerator, log)
    if sharded:
        sharding.shard(module, job.student, OBJECTIVES[stage.objective].layer_call, accelerator.device)
        params = stage.trainable(job.student)  # the sharded parameters replace the originals
    optimizer = make_optimizer(params, r.optim)
    scheduler = wsd_scheduler(optimizer, r.train.steps, r.optim)  # stepped by hand: once per update
    if not sharded:
        module, optimizer = accelerator.prepare(module, optimizer)
    module.train()
    return params, module, optimizer, scheduler, sharded


def _accumulate(job: TrainJob, module, micro: list[dict], accelerator,
                sharded: bool = False) -> tuple[dict[str, float], float]:
    """Forward and backward over this process's micro-batches of one step.

    Returns every term's per-token mean over the global batch, and its number of real tokens.
    """
    obj, loss_cfg, world = OBJECTIVES[job.stage.objective], job.recipe.loss, accelerator.num_processes
    weights = obj.weights(loss_cfg)
    masks = [{**obj.masks(b, loss_cfg), "_tokens": nonpad_mask(b)} for b in micro]
    local = torch.stack([sum(m[k].sum() for m in masks) for k in masks[0]]).double()
    counts = dict(zip(masks[0], accelerator.reduce(local, "sum").tolist()))
    sums: dict[str, torch.Tensor] = {}
    for j, batch in enumerate(micro):
        sync = (contextlib.nullcontext() if j == len(micro) - 1
                else sharding.no_sync(module) if sharded else accelerator.no_sync(module))
        with sync:
            with accelerator.autocast():
                targets = obj.targets(job.teacher, batch, job.student)
                terms = module(batch, targets)
            loss = sum(w * terms[t] / max(counts[t.split(".")[0]], 1.0) for t, w in weights.items() if w)
            accelerator.backward(loss * world)  # DDP and FSDP's reduce-scatter divide by the process count
        for t, v in terms.items():
            sums[t] = sums.get(t, 0) + v.detach().double()
    names = sorted(sums)
    reduced = accelerator.reduce(torch.stack([sums[t] for t in names]), "sum").tolist()
    return {t: s / max(counts[t.split(".")[0]], 1.0) for t, s in zip(names, reduced)}, counts["_tokens"]


def _next(batches, stage: Stage) -> dict:
    """The next micro-batch; an image that passed the header check but does not decode stops the run."""
    try:
        return next(batches)
    except RecordError as e:
        raise UserError(f"{stage.name}: {e}; checkpoints so far are kept (--strict decodes every image "
                        "before training starts)") from None


def _to(batch: dict, device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _clip(accelerator, params: dict, max_norm: float, sharded: bool = False) -> float:
    ps = list(params.values())
    if sharded:
        return sharding.grad_norm(ps, max_norm)
    if max_norm > 0:
        return float(accelerator.clip_grad_norm_(ps, max_norm))
    grads = [p.grad.detach().float().norm() for p in ps if p.grad is not None]
    return float(torch.stack(grads).norm()) if grads else 0.0


def _save(job: TrainJob, params: dict, optimizer_state: dict, scheduler, step: int, accelerator) -> None:
    from accelerate.utils import gather_object  # deferred: slow to import

    rngs = gather_object([rng_state()])
    if accelerator.is_main_process:
        lines = sum(1 for _ in (Path(job.work) / METRICS).open()) if (Path(job.work) / METRICS).exists() else 0
        seen = {"samples_seen": step * job.recipe.train.global_batch, "dataset_size": len(job.dataset)}
        save_checkpoint(job.work, step, params, optimizer_state, scheduler, rngs, lines, job.recipe.train.keep_checkpoints,
                        seen)
    accelerator.wait_for_everyone()


def _apply_lr(optimizer, scheduler, lr: float, log) -> None:
    """After a divergence the resume may lower optim.lr: rescale the restored schedule to it."""
    if all(base == lr for base in scheduler.base_lrs):
        return
    scheduler.base_lrs = [lr for _ in scheduler.base_lrs]
    for group, fn in zip(optimizer.param_groups, scheduler.lr_lambdas):
        group["initial_lr"], group["lr"] = lr, lr * fn(scheduler.last_epoch)
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]
    if log:
        log(f"learning rate changed on resume: peak {lr:g}")


def _resume(job: TrainJob, params: dict, module, optimizer, scheduler, rank: int, metrics: Path, accelerator, log,
            sharded: bool = False) -> int:
    ckpts = list_checkpoints(job.work)
    if not ckpts:
        if log:
            log(f"{job.stage.name}: no checkpoint in {job.work}; starting from step 0")
        if accelerator.is_main_process and metrics.exists():
            metrics.unlink()
        accelerator.wait_for_everyone()
        return 0
    state = load_checkpoint(ckpts[-1])
    with torch.no_grad():
        for name, p in params.items():
            if name not in state["trainable"]:
                raise UserError(f"checkpoint {ckpts[-1]} lacks {name}; it belongs to another stage or student")
            if sharded:
                sharding.copy_full_(p, state["trainable"][name])
            else:
                p.copy_(state["trainable"][name])
    if sharded:
        sharding.load_optimizer_state(module, optimizer, state["optimizer"])
    else:
        optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    _apply_lr(optimizer, scheduler, job.recipe.optim.lr, log)
    set_rng_state(state["rng"][rank] if rank < len(state["rng"]) else state["rng"][0])
    if accelerator.is_main_process:  # drop metrics written after the checkpoint
        kept = metrics.read_text().splitlines(keepends=True)[: state["metrics_lines"]] if metrics.exists() else []
        tmp = metrics.with_name(f".{metrics.name}.tmp")
        tmp.write_text("".join(kept))
        tmp.replace(metrics)
    accelerator.wait_for_everyone()
    if log:
        log(f"{job.stage.name}: resumed from {ckpts[-1]} (step {state['step']})")
    return int(state["step"])
