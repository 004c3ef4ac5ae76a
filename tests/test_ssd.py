"""SSD scan: chunked vs sequential vs closed form, decode step, pads, dtypes, dispatch (CPU)."""
from __future__ import annotations

import functools
import warnings

import pytest
import torch
import torch.nn.functional as F

from mmmamba_cli.ops import kernels, ssd_chunked, ssd_naive, ssd_scan, ssd_step, ssd_update
from mmmamba_cli.ops import ssd_ref

LENGTHS = [1, 7, 127, 128, 129, 1000]
CHUNKS = [16, 64, 128]
FP32 = dict(rtol=1e-4, atol=1e-5)


def make_inputs(l: int, b: int = 2, h: int = 3, p: int = 8, n: int = 4, seed: int = 0,
                dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Random scan inputs; p != n so a swapped state layout cannot pass."""
    g = torch.Generator().manual_seed(seed)
    t = {
        "x": torch.randn(b, l, h, p, generator=g),
        "dt": F.softplus(torch.randn(b, l, h, generator=g) - 1.5),  # about 0.05 .. 1
        "A": -(0.5 + 2 * torch.rand(h, generator=g)),
        "B": torch.randn(b, l, h, n, generator=g) / n**0.5,
        "C": torch.randn(b, l, h, n, generator=g) / n**0.5,
        "initial_state": torch.randn(b, h, p, n, generator=g),
    }
    return {k: v.to(dtype) for k, v in t.items()}


def scan_args(t: dict, init: bool) -> tuple[tuple, dict]:
    return (t["x"], t["dt"], t["A"], t["B"], t["C"]), {"initial_state": t["initial_state"] if init else None}


def quadratic_form(x, dt, A, B, C, S0):
    """y_t = sum_{s<=t} e^{A sum_{s<k<=t} dt_k} dt_s (C_t.B_s) x_s + e^{A sum_{k<=t} dt_k} S0 C_t."""
    cum = torch.cumsum(dt, dim=1)  # (b, l, h)
    seg = cum[:, :, None] - cum[:, None, :]  # (b, t, s, h): sum over s < k <= t
    causal = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool).tril()[None, :, :, None]
    L = torch.where(causal, torch.exp(seg * A), torch.zeros_like(seg))  # (b, t, s, h)
    scores = torch.einsum("bthn,bshn->btsh", C, B) * L * dt[:, None]  # (b, t, s, h)
    y = torch.einsum("btsh,bshp->bthp", scores, x)
    y = y + torch.exp(cum * A)[..., None] * torch.einsum("bhpn,bthn->bthp", S0, C)
    to_end = torch.exp((cum[:, -1:] - cum) * A) * dt  # (b, l, h)
    S = torch.einsum("bsh,bshp,bshn->bhpn", to_end, x, B) + torch.exp(cum[:, -1] * A)[..., None, None] * S0
    return y, S


def test_naive_matches_closed_form():
    t = make_inputs(20, dtype=torch.float64)
    y, S = ssd_naive(t["x"], t["dt"], t["A"], t["B"], t["C"], initial_state=t["initial_state"])
    y_ref, S_ref = quadratic_form(t["x"], t["dt"], t["A"], t["B"], t["C"], t["initial_state"])
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(S, S_ref)


@functools.lru_cache(maxsize=None)
def naive_result(l: int, init: bool) -> tuple[torch.Tensor, torch.Tensor]:
    args, kw = scan_args(make_inputs(l), init)
    with torch.no_grad():
        return ssd_naive(*args, **kw)


@pytest.mark.parametrize("init", [False, True])
@pytest.mark.parametrize("chunk_size", CHUNKS)
@pytest.mark.parametrize("l", LENGTHS)
def test_chunked_matches_naive(l, chunk_size, init):
    args, kw = scan_args(make_inputs(l), init)
    y, S = ssd_chunked(*args, chunk_size=chunk_size, **kw)
    y_ref, S_ref = naive_result(l, init)
    assert y.shape == y_ref.shape and y.is_contiguous() and S.dtype == torch.float32
    torch.testing.assert_close(y, y_ref, **FP32)
    torch.testing.assert_close(S, S_ref, **FP32)


def grads(fn, t: dict, seed: int = 1) -> list[torch.Tensor]:
    """Gradients of a random linear functional of (y, final state) w.r.t. every input."""
    leaves = {k: v.detach().clone().requires_grad_() for k, v in t.items()}
    y, S = fn(leaves["x"], leaves["dt"], leaves["A"], leaves["B"], leaves["C"],
              initial_state=leaves["initial_state"])
    g = torch.Generator().manual_seed(seed)
    loss = (y * torch.randn(y.shape, generator=g)).sum() + (S * torch.randn(S.shape, generator=g)).sum()
    return list(torch.autograd.grad(loss, list(leaves.values())))


@functools.lru_cache(maxsize=None)
def naive_grads(l: int) -> list[torch.Tensor]:
    return grads(ssd_naive, make_inputs(l))


@pytest.mark.parametrize("chunk_size", [16, 64])
@pytest.mark.parametrize("l", LENGTHS)
def test_chunked_grads_match_naive(l, chunk_size):
    got = grads(functools.partial(ssd_chunked, chunk_size=chunk_size), make_inputs(l))
    for name, g, g_ref in zip(["x", "dt", "A", "B", "C", "initial_state"], got, naive_grads(l)):
        torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-4, msg=lambda m: f"d{name}: {m}")


@pytest.mark.parametrize("elems", [1, 3 * 16 * 16 * 2 * 3])  # segments of 1 and of 3 chunks
def test_cpu_segments_match_one_pass(monkeypatch, elems):
    t = make_inputs(129)
    args, kw = scan_args(t, True)
    y_ref, S_ref = ssd_chunked(*args, chunk_size=16, **kw)
    g_ref = grads(functools.partial(ssd_chunked, chunk_size=16), t)
    monkeypatch.setattr(ssd_ref, "_SEGMENT_ELEMS", elems)
    assert ssd_ref._segment_tokens(t["x"], 16, 8) < 129
    y, S = ssd_chunked(*args, chunk_size=16, **kw)
    torch.testing.assert_close(y, y_ref, **FP32)
    torch.testing.assert_close(S, S_ref, **FP32)
    for g, gr in zip(grads(functools.partial(ssd_chunked, chunk_size=16), t), g_ref):
        torch.testing.assert_close(g, gr, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("inplace", [False, True])
def test_step_decoding_matches_chunked(inplace):
    t = make_inputs(45)
    y_ref, S_ref = ssd_chunked(*scan_args(t, True)[0], chunk_size=16, initial_state=t["initial_state"])
    state = t["initial_state"].clone()
    ys = []
    for i in range(45):
        y_i, new = ssd_step(state, t["x"][:, i], t["dt"][:, i], t["A"], t["B"][:, i], t["C"][:, i],
                            inplace=inplace)
        assert (new is state) == inplace
        state = new
        ys.append(y_i)
    torch.testing.assert_close(torch.stack(ys, dim=1), y_ref, **FP32)
    torch.testing.assert_close(state, S_ref, **FP32)


def insert_pads(t: dict, pads: list[int], seed: int = 3) -> tuple[dict, torch.Tensor]:
    """Insert tokens with random x, B, C but dt = 0 at ``pads`` (indices in the padded sequence)."""
    l = t["x"].shape[1] + len(pads)
    real = torch.ones(l, dtype=torch.bool)
    real[pads] = False
    g = torch.Generator().manual_seed(seed)
    out = dict(t)
    for k in ("x", "dt", "B", "C"):
        v = torch.randn((t[k].shape[0], l) + t[k].shape[2:], generator=g)
        v[:, real] = t[k]
        out[k] = v
    out["dt"][:, ~real] = 0.0
    return out, real


@pytest.mark.parametrize("fn", [ssd_naive, functools.partial(ssd_chunked, chunk_size=16)])
def test_dt_zero_tokens_change_nothing(fn):
    t = make_inputs(50)
    padded, real = insert_pads(t, [0, 1, 10, 16, 17, 31, 52, 53, 54])
    y_ref, S_ref = fn(*scan_args(t, True)[0], initial_state=t["initial_state"])
    y, S = fn(*scan_args(padded, True)[0], initial_state=t["initial_state"])
    torch.testing.assert_close(y[:, real], y_ref, **FP32)
    torch.testing.assert_close(S, S_ref, **FP32)


def test_dt_zero_step_keeps_state_bitwise():
    t = make_inputs(1)
    dt0 = torch.zeros_like(t["dt"][:, 0])
    _, S = ssd_step(t["initial_state"], t["x"][:, 0], dt0, t["A"], t["B"][:, 0], t["C"][:, 0])
    assert torch.equal(S, t["initial_state"])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs_compute_in_fp32(dtype):
    t = make_inputs(200, dtype=dtype)
    args, kw = scan_args(t, True)
    y, S = ssd_chunked(*args, chunk_size=64, **kw)
    assert y.dtype == dtype and S.dtype == torch.float32
    args32, kw32 = scan_args({k: v.float() for k, v in t.items()}, True)
    y32, S32 = ssd_chunked(*args32, chunk_size=64, **kw32)
    torch.testing.assert_close(y.float(), y32, rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(S, S32, **FP32)


def test_dispatch_torch_on_cpu():
    t = make_inputs(70)
    args, kw = scan_args(t, True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning for CPU tensors
        for impl in ("torch", "auto"):
            y, S = ssd_scan(*args, 32, impl=impl, **kw)
            y_ref, S_ref = ssd_chunked(*args, chunk_size=32, **kw)
            assert torch.equal(y, y_ref) and torch.equal(S, S_ref)
            state = t["initial_state"].clone()
            step = (t["x"][:, 0], t["dt"][:, 0], t["A"], t["B"][:, 0], t["C"][:, 0])
            y1 = ssd_update(state, *step, impl=impl)
            y1_ref, S1_ref = ssd_step(t["initial_state"], *step)
            assert torch.equal(y1, y1_ref) and torch.equal(state, S1_ref)


def test_dispatch_rejects_kernel_on_cpu_and_unknown_impl():
    t = make_inputs(8)
    args, _ = scan_args(t, False)
    with pytest.raises(RuntimeError, match="impl='kernel' needs"):
        ssd_scan(*args, 16, impl="kernel")
    with pytest.raises(RuntimeError, match="impl='kernel' needs"):
        ssd_update(t["initial_state"], t["x"][:, 0], t["dt"][:, 0], t["A"], t["B"][:, 0], t["C"][:, 0],
                   impl="kernel")
    with pytest.raises(ValueError, match="impl must be one of"):
        ssd_scan(*args, 16, impl="triton")
    assert isinstance(kernels.kernels_available(), bool)


def test_auto_fallback_warns_once(monkeypatch):
    """Pretend the tensors are on CUDA and mamba-ssm is missing: torch path, one warning."""
    monkeypatch.setattr(kernels, "_is_cuda", lambda t: True)
    monkeypatch.setattr(kernels, "_load_kernels", lambda: (None, "ImportError: no mamba_ssm"))
    monkeypatch.setattr(kernels, "_fallback_warned", False)
    args, kw = scan_args(make_inputs(20), True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y, _ = ssd_scan(*args, 16, **kw)
        ssd_scan(*args, 16, **kw)
    assert [type(w.message) for w in caught] == [RuntimeWarning]
    assert "no mamba_ssm" in str(caught[0].message)
    torch.testing.assert_close(y, ssd_chunked(*args, chunk_size=16, **kw)[0])
