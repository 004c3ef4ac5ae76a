"""FSDP2 full shard of the student (``train.sharding=fsdp``, or accelerate's FSDP config).

With more than one process, every decoder layer of the student becomes an FSDP unit and the
objective module (which holds the student) the root unit: parameters, gradients and AdamW state
are split over the processes along their first dimension, and a unit's full parameters exist
only while it runs (all-gather before, reduce-scatter of the gradients after). A unit's
all-gather fires on the layer method the objective calls: ``forward`` (stage 3) through the
module hooks, ``mix`` (stages 1-2, the mixer alone) through ``register_fsdp_forward_method``.
The frozen teacher is not sharded: every process keeps a full replica.

The reduce-scatter averages over the processes, as DDP's all-reduce does, so the loop's loss
scaling is the same for both. Checkpoints and the final model hold full tensors (gathered here,
written by the main process), so they load the same with any process count or sharding.
"""
from __future__ import annotations

import contextlib
import os

import torch
from torch import nn

from ..errors import UserError

CHOICES = ("none", "fsdp")


def wanted(sharding: str, precision: str, accelerator, log=None) -> bool:
    """Shard the student? The recipe's ``train.sharding`` or accelerate's FSDP config asks (on CPUs
    accelerate runs an FSDP config as plain multi-CPU and only its launcher's environment says
    FSDP); one process runs unsharded (with a note)."""
    from accelerate.utils import DistributedType  # deferred: slow to import

    if sharding not in CHOICES:
        raise UserError(f"train.sharding must be one of {', '.join(CHOICES)}, got {sharding!r}")
    asked = (sharding == "fsdp" or accelerator.distributed_type == DistributedType.FSDP
             or os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true")
    if not asked:
        return False
    if accelerator.num_processes < 2:
        if log:
            log("train.sharding=fsdp with 1 process: nothing to shard, running unsharded")
        return False
    if precision == "fp16":
        raise UserError("train.sharding=fsdp does not support train.precision=fp16 (it needs a sharded gradient "
                        "scaler); use bf16 or no")
    return True


def shard(module: nn.Module, student: nn.Module, layer_call: str, device) -> nn.Module:
    """Shard ``student`` (held by the objective ``module``) in place: a unit per decoder layer, the
    root ``module`` as the last unit (embeddings, final norm, output head). Returns ``module``."""
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    module.to(device)
    for layer in student.layers:
        fully_shard(layer)
        if layer_call != "forward":  # the objective calls layer.<layer_call> directly, not the module
            register_fsdp_forward_method(layer, layer_call)
    fully_shard(module)
    return module


def local_fraction(model: nn.Module) -> float:
    """Share of ``model``'s parameter elements held by this process (1.0 when not sharded)."""
    full = local = 0
    for p in model.parameters():
        full += p.numel()
        local += _local(p).numel()
    return local / max(full, 1)


def no_sync(module: nn.Module):
    """Skip the gradient reduce-scatter for a non-final micro-batch (gradients accumulate locally)."""

    @contextlib.contextmanager
    def off():
        module.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            module.set_requires_gradient_sync(True)

    return off()


def grad_norm(params: list[torch.Tensor], max_norm: float) -> float:
    """The global L2 norm of the (sharded) gradients, clipped to ``max_norm`` when > 0."""
    if max_norm > 0:
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    else:
        norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
    return float(_full(norm))


def full_tensors(tensors: dict[str, torch.Tensor], keep: bool = True) -> dict[str, torch.Tensor]:
    """Every tensor gathered whole, on the CPU (collective: all processes call it, in the same order).
    Tensors shared under two names stay shared. ``keep=False``: take part, keep nothing ({})."""
    out, seen = {}, {}
    for name, t in tensors.items():
        if id(t) not in seen:
            full = _full(t.detach())
            seen[id(t)] = full.cpu() if keep else None
        if keep:
            out[name] = seen[id(t)]
    return out


def copy_full_(param: torch.Tensor, full: torch.Tensor) -> None:
    """Load a full tensor into ``param`` (this process keeps its own shard of it)."""
    with torch.no_grad():
        param.copy_(_like(full, param))


def full_optimizer_state(module: nn.Module, optimizer) -> dict:
    """The optimizer's state gathered whole, in ``optimizer.state_dict()``'s layout (parameters
    numbered in group order), on the main process; {} on the others (collective)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    sd = get_optimizer_state_dict(module, optimizer,
                                  options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not sd:
        return {}
    index = {name: i for i, name in enumerate(_names(module, optimizer))}
    return {"state": {index[name]: s for name, s in sd["state"].items()},
            "param_groups": [{**g, "params": [index[name] for name in g["params"]]} for g in sd["param_groups"]]}


def load_optimizer_state(module: nn.Module, optimizer, state: dict) -> None:
    """Load a full ``optimizer.state_dict()`` (from any process count) into the sharded optimizer."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    names = _names(module, optimizer)
    if len(names) != sum(len(g["params"]) for g in state["param_groups"]):
        raise UserError("the checkpoint's optimizer state belongs to another set of trained parameters")
    by_name = {"state": {names[i]: s for i, s in state["state"].items()},
               "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in state["param_groups"]]}
    set_optimizer_state_dict(module, optimizer, by_name, options=StateDictOptions(full_state_dict=True))


def _names(module: nn.Module, optimizer) -> list[str]:
    """The optimizer's parameters, in group order, by their name in ``module``."""
    name = {id(p): n for n, p in module.named_parameters()}
    return [name[id(p)] for g in optimizer.param_groups for p in g["params"]]


def _full(t: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def _local(t: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return t.to_local() if isinstance(t, DTensor) else t


def _like(full: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """``full`` laid out as ``param`` is (this process's shard when ``param`` is sharded)."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    full = full.to(device=param.device, dtype=param.dtype)
    if not isinstance(param, DTensor):
        return full
    return distribute_tensor(full, param.device_mesh, param.placements, src_data_rank=None)
