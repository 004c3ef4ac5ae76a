"""`mmmamba bench` and the fast decode path behind it (tiny shapes, CPU; one GPU test)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import image_inputs, randomize, tiny_config
from mmmamba_cli.bench.bandwidth import card_bandwidth, decode_bytes
from mmmamba_cli.bench.context_length import measure_at_length
from mmmamba_cli.bench.memory import PeakMemory
from mmmamba_cli.bench.models import set_attention_impl
from mmmamba_cli.bench.report import loglog_slope
from mmmamba_cli.bench.runner import run_bench, write_results
from mmmamba_cli.bench.settings import MODEL_KINDS, BenchSettings, bench_settings, parse_tokens
from mmmamba_cli.cli.main import app
from mmmamba_cli.errors import UserError
from mmmamba_cli.io.save import save_model_dir
from mmmamba_cli.model import MMModel
from mmmamba_cli.model.layout import layer_types_for
from mmmamba_cli.runtime import GraphDecoder, make_decoder
from mmmamba_cli.runtime.decoder import EagerDecoder

LAYOUTS = {"teacher": [0, 1, 2, 3], "linear": [], "hybrid": [0], "mixed": [1, 3]}
FAST = {"sweep.decode_steps": 3, "sweep.warmup_steps": 1, "sweep.repeats": 1, "fixed_prompt.new_tokens": 4}


def settings(**kw) -> BenchSettings:
    """Bench settings from dotted keys, on top of FAST."""
    return bench_settings(overrides={**FAST, **kw})


def model_for(layout: str, groups: int = 2, seed: int = 0) -> MMModel:
    torch.manual_seed(seed)
    c = tiny_config(groups).with_layer_types(layer_types_for(LAYOUTS[layout], 4))
    return randomize(MMModel(c).eval(), seed)


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_decode_step_matches_model_forward(layout, attention):
    """Left-padded batch of 2, both attention settings: the runtime's step == the plain forward with a
    cache, and the cache continues with model.forward afterwards."""
    m = model_for(layout).fuse_for_decode()
    set_attention_impl(m, attention)
    g = torch.Generator().manual_seed(1)
    ids, steps = torch.randint(10, 128, (2, 9), generator=g), torch.randint(10, 128, (2, 6), generator=g)
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, :3] = 0
    with torch.no_grad():
        ref, cache = m.new_cache(2, 24), m.new_cache(2, 24)
        m(ids, attention_mask=mask, cache=ref)
        m(ids, attention_mask=mask, cache=cache)
        dec = make_decoder(m, cache)
        for t in range(4):
            want = m(steps[:, t:t + 1], cache=ref)[:, -1]
            torch.testing.assert_close(dec.step(steps[:, t]), want, atol=1e-5, rtol=1e-4)
        dec.close()
        torch.testing.assert_close(m(steps[:, 4:], cache=cache), m(steps[:, 4:], cache=ref), atol=1e-5, rtol=1e-4)


def test_no_decode_code_left_in_bench():
    import mmmamba_cli.bench as bench

    names = {p.stem for p in Path(bench.__file__).parent.glob("*.py")}
    assert not names & {"decode_layers", "fuse", "static_decode", "cell"}


def test_parse_tokens_and_settings_errors():
    assert parse_tokens("1k, 4k,103000,128k") == [1024, 4096, 103000, 131072]
    for bad in ("", "abc", "1.5", "-4k"):
        with pytest.raises(UserError):
            parse_tokens(bad)
    with pytest.raises(UserError) as e:
        bench_settings(overrides=["models.kinds=teacher,mamba3", "models.size=huge", "models.teacher_impl=flash",
                                  "sweep.decod_steps=2"])
    assert all(w in str(e.value) for w in ("mamba3", "huge", "flash", "sweep.decod_steps"))
    s = bench_settings(overrides=["sweep.tokens=4k,1k", "runtime.graphs=off"])
    assert s.sweep.tokens == [1024, 4096] and s.runtime.graphs == "off" and s.models.kinds == list(MODEL_KINDS)


def test_bandwidth_and_bytes():
    assert card_bandwidth("NVIDIA H100 80GB HBM3") == 3.35e12
    assert card_bandwidth("NVIDIA H200") == 4.8e12 and card_bandwidth("Tesla K80") is None
    lin, teacher = model_for("linear"), model_for("teacher")
    assert decode_bytes(lin, 100) == decode_bytes(lin, 10_000)
    grow = decode_bytes(teacher, 2000) - decode_bytes(teacher, 1000)
    assert grow == 4 * 2 * 2 * 16 * 1000 * 4  # layers x (k, v) x kv heads x head_dim x tokens x fp32


def test_loglog_slope():
    xs = [1024, 2048, 4096, 8192]
    assert loglog_slope(xs, [3.0 * x for x in xs]) == pytest.approx(1.0)
    assert loglog_slope(xs, [2.0] * 4) == pytest.approx(0.0)
    assert loglog_slope([1024], [1.0]) is None


def test_cpu_peak_memory_counts_a_phase():
    meter = PeakMemory(torch.device("cpu"), resident_bytes=1000)
    meter.start()
    x = torch.ones(8 * 1024 * 1024)  # 32 MiB, touched
    peak = meter.peak()
    del x
    assert peak >= 30 * 2 ** 20 + 1000 if meter.method.startswith("rss: VmHWM") else peak > 0


def test_bench_end_to_end_and_files(tmp_path):
    s = settings(**{"sweep.tokens": [32, 64]})
    result = run_bench(s, log=lambda m: None)
    rows = result["rows"]
    cells = [(m, t) for m in ("teacher", "linear", "hybrid") for t in (32, 64)]
    assert [(r["model"], r["tokens"]) for r in rows] == cells
    for r in rows:
        assert not r["oom"] and r["prefill_s"] > 0 and r["decode_s_per_token"] > 0 and r["peak_mem_bytes"] > 0
        assert r["decoder"] == "runtime" and r["cuda_graph"] is False
    lin = next(r for r in rows if r["model"] == "linear" and r["tokens"] == 64)
    assert lin["decode_speedup"] > 0 and "peak_mem_change" in lin
    assert set(result["slopes"]) == {"teacher", "linear", "hybrid"}
    assert [f["model"] for f in result["fixed_prompt"]] == ["teacher", "linear", "hybrid"]
    assert all(f["tokens_per_s"] > 0 for f in result["fixed_prompt"])
    out = write_results(result, tmp_path / "bench")
    data = json.loads((out / "bench.json").read_text())
    assert {"device", "versions", "git_sha", "date"} <= set(data["environment"])
    for key in ("model", "tokens", "prefill_s", "decode_s_per_token", "peak_mem_bytes", "oom"):
        assert all(key in r for r in data["rows"])
    assert (out / "bench.png").stat().st_size > 1000
    assert "| linear | 64 |" in (out / "bench.md").read_text()


def test_injected_oom_is_a_result(tmp_path, monkeypatch):
    """Prefill of >= 64 tokens raises CUDA's OOM: recorded, longer lengths skipped, files written."""
    real = MMModel.forward

    def forward(self, input_ids, *a, **kw):
        if input_ids.shape[1] >= 64 and self.config.kind == "teacher":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real(self, input_ids, *a, **kw)

    monkeypatch.setattr(MMModel, "forward", forward)
    s = settings(**{"sweep.tokens": [32, 64, 128], "models.kinds": ["teacher", "linear"],
                    "fixed_prompt.enabled": False})
    result = run_bench(s, log=lambda m: None)
    by = {(r["model"], r["tokens"]): r for r in result["rows"]}
    assert not by[("teacher", 32)]["oom"]
    assert by[("teacher", 64)]["oom"] and by[("teacher", 64)]["oom_phase"] == "prefill"
    assert by[("teacher", 128)]["oom"] and by[("teacher", 128)]["oom_phase"] == "skipped"
    assert not any(by[("linear", t)]["oom"] for t in (32, 64, 128))
    assert "decode_speedup" in by[("linear", 32)] and "decode_speedup" not in by[("linear", 64)]
    out = write_results(result, tmp_path / "b")
    assert json.loads((out / "bench.json").read_text())["rows"][1]["oom"] is True


def test_measure_cell_records_decode_oom(monkeypatch):
    m = model_for("teacher")

    def boom(*a, **kw):
        raise RuntimeError("[enforce fail] DefaultCPUAllocator: can't allocate memory: you tried 9 GB")

    monkeypatch.setattr(EagerDecoder, "step", boom)
    row = measure_at_length(m, "teacher", 32, settings(), torch.device("cpu"))
    assert row["oom"] and row["oom_phase"] == "decode" and row["prefill_s"] > 0


runner = CliRunner()


def run(*args):
    res = runner.invoke(app, list(map(str, args)), catch_exceptions=True)
    if isinstance(res.exception, UserError):
        return 2, str(res.exception)
    if res.exception and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res.exit_code, res.output


def test_cli_bench(tmp_path):
    out = tmp_path / "bench"
    args = ["bench", "--tokens", "32,48", "--models", "linear,teacher", "--steps", "2", "--warmup", "1",
            "--repeats", "1", "--new-tokens", "3", "--out", out, "sweep.decode_steps=3"]
    code, text = run(*args)
    assert code == 0, text
    assert {p.name for p in out.iterdir()} == {"bench.json", "bench.md", "bench.png"}
    saved = json.loads((out / "bench.json").read_text())["settings"]
    assert saved["sweep"]["decode_steps"] == 3 and saved["models"]["kinds"] == ["linear", "teacher"]
    assert run(*args)[0] == 2  # never overwrite silently
    assert run("bench", "--tokens", "4q", "--out", tmp_path / "x")[0] == 2
    assert run("bench", "--models", "teacher,gpt", "--out", tmp_path / "x")[0] == 2
    assert run("bench", "sweep.decod_steps=2", "--out", tmp_path / "x")[0] == 2  # a typo in an override
    assert not (tmp_path / "x").exists()


def test_cli_bench_model_dir(tmp_path):
    """--model DIR: its own kind runs its weights, the other kinds random weights of its shapes."""
    m = model_for("linear", seed=3)
    save_model_dir(tmp_path / "m", m.config, m.state_dict())
    s = settings(**{"sweep.tokens": [32], "models.kinds": "linear,teacher", "models.model_dir": str(tmp_path / "m"),
                    "fixed_prompt.enabled": False})
    rows = run_bench(s, log=lambda m: None)["rows"]
    assert [r["model"] for r in rows] == ["linear", "teacher"] and not any(r["oom"] for r in rows)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_decoder_matches_eager_decoder():
    m = model_for("hybrid").cuda().fuse_for_decode()
    ids = torch.randint(10, 128, (1, 40), device="cuda")
    with torch.no_grad():
        caches = [m.new_cache(1, 64) for _ in range(2)]
        for c in caches:
            m(ids, cache=c)
        eager, graphed = EagerDecoder(m, caches[0]), GraphDecoder(m, caches[1])
        tok = torch.tensor([9], device="cuda")
        for _ in range(5):
            want = eager.step(tok)
            torch.testing.assert_close(graphed.step(tok), want, atol=1e-4, rtol=1e-4)
            tok = want.argmax(-1)
        graphed.close()
        # the same capture serves a new prompt after a reset
        caches[1].reset()
        m(ids[:, :20], cache=caches[1])
        graphed = GraphDecoder(m, caches[1])
        want = m(torch.cat([ids[:, :20], tok[:, None]], 1))[:, -1]
        torch.testing.assert_close(graphed.step(tok), want, atol=1e-4, rtol=1e-4)
