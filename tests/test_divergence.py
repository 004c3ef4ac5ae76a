"""Chunked KL: the same loss and gradients as a direct computation, whatever the chunk size."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmmamba_cli.ops.divergence import kl_sum, token_stats


def direct_kl(s, t, temperature=1.0):
    log_t = F.log_softmax(t.float() / temperature, -1)
    return (log_t.exp() * (log_t - F.log_softmax(s.float() / temperature, -1))).sum() * temperature ** 2


@pytest.mark.parametrize("chunk", [1, 7, 64, 4096])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_chunked_kl_equals_direct_loss_and_gradient(chunk, temperature):
    g = torch.Generator().manual_seed(0)
    s = torch.randn(3, 11, 50, generator=g, dtype=torch.float64).requires_grad_()
    t = torch.randn(3, 11, 50, generator=g, dtype=torch.float64)
    mask = torch.rand(3, 11, generator=g) > 0.3
    loss = kl_sum(s, t, mask, temperature, chunk=chunk)
    (grad,) = torch.autograd.grad(loss * 1.7, s)
    s2 = s.detach().clone().requires_grad_()
    ref = direct_kl(s2[mask], t[mask], temperature)
    (ref_grad,) = torch.autograd.grad(ref * 1.7, s2)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    assert torch.allclose(grad.float(), ref_grad.float(), atol=1e-6)
    assert grad[~mask].abs().max() == 0  # unmasked tokens get no gradient


def test_kl_of_identical_distributions_is_zero_and_empty_mask_is_zero():
    x = torch.randn(5, 20)
    assert float(kl_sum(x, x.clone())) == pytest.approx(0.0, abs=1e-5)
    s = torch.randn(2, 3, 20, requires_grad=True)
    out = kl_sum(s, torch.randn(2, 3, 20), torch.zeros(2, 3, dtype=torch.bool))
    out.backward()
    assert out.item() == 0.0 and s.grad.abs().max() == 0


def test_token_stats_match_direct_sums():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(2, 9, 30, generator=g), torch.randn(2, 9, 30, generator=g)
    tg = torch.randint(0, 30, (2, 9), generator=g)
    m = torch.rand(2, 9, generator=g) > 0.5
    st = token_stats(s, t, m, targets=tg, chunk=4)
    ls, lt = s.log_softmax(-1)[m], t.log_softmax(-1)[m]
    assert st["tokens"] == int(m.sum())
    assert st["kl"] == pytest.approx(float((lt.exp() * (lt - ls)).sum()), rel=1e-5)
    assert st["agree"] == float((ls.argmax(-1) == lt.argmax(-1)).sum())
    assert st["nll"] == pytest.approx(-float(ls.gather(-1, tg[m][:, None]).sum()), rel=1e-5)
    assert st["teacher_nll"] == pytest.approx(-float(lt.gather(-1, tg[m][:, None]).sum()), rel=1e-5)


def test_backward_memory_is_bounded_by_the_chunk():
    """The saved state is the two inputs only: no (n, V) fp32 intermediates kept for backward."""
    s = torch.randn(64, 1000, dtype=torch.bfloat16, requires_grad=True)
    t = torch.randn(64, 1000, dtype=torch.bfloat16)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda x: saved.append(x) or x, lambda x: x):
        kl_sum(s, t, chunk=8)
    assert sum(x.numel() * x.element_size() for x in saved) <= 2 * s.numel() * s.element_size()
