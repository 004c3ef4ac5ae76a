"""Activation checkpointing: the same gradients, the layers really recomputed in the backward."""
import copy

import pytest
import torch

from conftest import tiny_teacher
from mmmamba_cli.data import collate
from mmmamba_cli.distill.checkpointing import checkpoint_layers
from mmmamba_cli.distill.objectives import OBJECTIVES
from mmmamba_cli.distill.schema import LossSection
from test_packing import records, student_of

torch.set_num_threads(1)


@pytest.mark.parametrize("objective", ["layerwise", "kl"])
def test_checkpointed_layers_give_the_same_gradients(objective):
    teacher = tiny_teacher()
    plain = student_of(teacher, (1,))
    ckpt = copy.deepcopy(plain)
    obj, loss = OBJECTIVES[objective], LossSection(ce_weight=0.3)
    assert checkpoint_layers(ckpt, obj.layer_call) == len(ckpt.layers)
    calls = []
    ckpt.layers[3].attention_norm.register_forward_hook(lambda *a: calls.append(torch.is_grad_enabled()))
    batch = collate(records(teacher.config), 0)
    targets = obj.targets(teacher, batch, plain)
    grads = []
    for model in (plain, ckpt):
        terms = obj.student(model, loss)(batch, targets)
        sum(w * terms[t] for t, w in obj.weights(loss).items() if w).backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert len(calls) == 2  # forward, then recomputed in the backward
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name, g in grads[0].items():
        assert torch.allclose(grads[1][name], g, rtol=1e-5, atol=1e-7), name
