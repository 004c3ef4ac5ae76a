"""`mmmamba hybridize`: placement rules, option validation, exact teacher weights, hybrid decode,
deterministic measured placement that finds the obviously sensitive layer."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import image_inputs, randomize, save_hovle_snapshot, tiny_teacher
from mmmamba_cli.hybrid import RULES, LayoutRequest, choose_layers, resolve_layers
from mmmamba_cli.hybrid.calibration import calibration_items
from mmmamba_cli.io.load import load_model, load_state
from mmmamba_cli.io.save import save_model_dir
from mmmamba_cli.seed import seed_directory
from test_hovle_io import run

WORDS = ["what", "shape", "is", "this", "colour", "circle", "square", "red", "blue", "?"]


def _write_data(directory, n: int = 8):
    """n records, each a 32x32 image and one question/answer pair, as jsonl (relative image paths)."""
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    lines = []
    for i in range(n):
        px = (torch.rand(32, 32, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(px).save(directory / f"img{i}.png")
        q, a = ("what shape is this ?", "circle square".split()[i % 2]) if i % 3 else ("what colour is this ?", "red")
        lines.append(json.dumps({"image": f"img{i}.png", "conversations": [
            {"from": "human", "value": "<image>\n" + q}, {"from": "gpt", "value": a}]}))
    (directory / "calib.jsonl").write_text("\n".join(lines) + "\n")
    return directory / "calib.jsonl"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny HoVLE teacher snapshot (with a word tokenizer), its linear student, calibration data."""
    from mmmamba_cli.data import build_word_tokenizer

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("hyb")
    teacher = tiny_teacher()
    save_hovle_snapshot(teacher, root / "teacher", shards=2)
    tok = build_word_tokenizer(WORDS)
    assert tok.convert_tokens_to_ids("<IMG_CONTEXT>") == teacher.config.img_context_token_id
    tok.save_pretrained(str(root / "teacher"))
    seed_directory(root / "teacher", root / "seeded")
    return {"root": root, "teacher": root / "teacher", "seeded": root / "seeded", "model": teacher,
            "data": _write_data(root)}


def _student(world, name, change=None, attn_layers=None):
    """A student directory: the seeded one (or a hybrid seed) with ``change(model)`` applied."""
    src = world["seeded"]
    if attn_layers is not None:
        src = world["root"] / f"seed-{name}"
        seed_directory(world["teacher"], src, attn_layers=attn_layers)
    model, info = load_model(src)
    if change is not None:
        change(model)
    out = world["root"] / name
    save_model_dir(out, model.config, model.state_dict(), info.tokenizer_dir, force=True)
    return out


def _distilled(model):
    """Stand-in for distillation: every Mamba mixer parameter moves away from its seed."""
    for i in model.config.mamba_layers:
        randomize(model.layers[i].mixer, seed=100 + i)


# ---- placement rules ------------------------------------------------------------------------

def test_rules_paper_layout_and_block_definition():
    assert RULES["first-of-block"](8, 32) == list(range(0, 32, 4))  # SPEC section 4
    assert RULES["last-of-block"](8, 32) == list(range(3, 32, 4))
    assert RULES["top"](8, 32) == list(range(24, 32))
    assert RULES["bottom"](8, 32) == list(range(8))
    assert RULES["first-of-block"](3, 10) == [0, 3, 6] and RULES["last-of-block"](3, 10) == [2, 5, 9]
    for n in range(1, 13):
        for k in range(1, n + 1):
            for name, rule in RULES.items():
                got = rule(k, n)
                assert got == sorted(set(got)) and len(got) == k and 0 <= got[0] and got[-1] < n, (name, k, n)


def test_resolve_every_and_explicit():
    assert resolve_layers(LayoutRequest(every=4), 32) == list(range(0, 32, 4))
    assert resolve_layers(LayoutRequest(every=4, offset=3), 32) == list(range(3, 32, 4))
    assert resolve_layers(LayoutRequest(attn_layers="8, 0,4"), 32) == [0, 4, 8]
    assert resolve_layers(LayoutRequest(count=2, placement="auto"), 4) is None


# ---- option validation: one line, exit 2, nothing written -------------------------------------

@pytest.mark.parametrize("args,needle", [
    (["--attn-layers", "1,1"], "duplicate"),
    (["--attn-layers", "0,4"], "out of range"),
    (["--attn-layers", "-1"], "out of range"),
    (["--attn-layers", ""], "empty"),
    (["--attn-layers", ","], "empty"),
    (["--attn-layers", "0,1,2,3,3"], "only 4"),
    (["--count", "5"], "1 <= K <= 4"),
    (["--count", "0", "--placement", "top"], "1 <= K <= 4"),
    (["--count", "9", "--placement", "auto"], "1 <= K <= 4"),
    (["--count", "2", "--placement", "middle"], "choose one of"),
    (["--every", "0"], "--every"),
    (["--every", "2", "--offset", "2"], "--offset"),
    ([], "exactly one of"),
    (["--attn-layers", "0", "--every", "2"], "exactly one of"),
    (["--every", "2", "--count", "2"], "exactly one of"),
    (["--attn-layers", "0", "--offset", "1"], "--offset needs --every"),
    (["--attn-layers", "0", "--placement", "top"], "--placement needs --count"),
    (["--count", "2", "--placement", "top", "--data", "easyvqa"], "only used by --placement auto"),
    (["--every", "2", "--calib-samples", "4"], "only used by --placement auto"),
])
def test_bad_options_one_line_no_output(world, tmp_path, args, needle):
    out = tmp_path / "hybrid"
    code, text = run("hybridize", world["seeded"], "-o", out, *args)
    assert code == 2, text
    assert needle in text and "\n" not in text.strip()
    assert not out.exists() and not list(tmp_path.glob(".hybrid*"))


def test_bad_student_and_teacher(world, tmp_path):
    out = tmp_path / "hybrid"
    code, text = run("hybridize", world["teacher"], "-o", out, "--every", "2")
    assert code == 2 and "not an mmmamba model" in text
    code, text = run("hybridize", world["seeded"], "-o", out, "--every", "2", "--teacher", tmp_path / "nope")
    assert code == 2 and "does not exist" in text
    code, text = run("hybridize", world["seeded"], "-o", out, "--every", "2", "--teacher", world["seeded"])
    assert code == 2 and "Mamba layers" in text
    assert not out.exists()


# ---- weights and decoding ---------------------------------------------------------------------

def test_kept_layers_are_the_teachers_and_the_rest_the_students(world, tmp_path):
    student = _student(world, "distilled", _distilled)
    out = tmp_path / "hybrid"
    code, text = run("hybridize", student, "-o", out, "--attn-layers", "1,3")
    assert code == 0, text
    cfg, sd, _ = load_state(out)
    _, tsd, _ = load_state(world["teacher"])
    _, ssd, _ = load_state(student)
    assert cfg.attention_layers == [1, 3] and cfg.kind == "hybrid"
    for i in (1, 3):
        for p in ("q_proj", "k_proj", "v_proj", "o_proj"):
            assert torch.equal(sd[f"layers.{i}.mixer.{p}.weight"], tsd[f"layers.{i}.mixer.{p}.weight"])
        assert not any(k.startswith(f"layers.{i}.mixer.") and "proj" not in k for k in sd)
    for k, t in sd.items():
        if not k.startswith(("layers.1.mixer.", "layers.3.mixer.")):
            assert torch.equal(t, ssd[k]), k  # the distilled Mamba layers, norms, MLPs, head
    assert cfg.source["teacher"] == str(world["teacher"].resolve())
    assert cfg.source["hybridized_from"] == str(student.resolve())
    report = json.loads((out / "hybridize_report.json").read_text())
    assert report["added"] == [1, 3] and report["reseeded"] == []
    resolved = json.loads((out / "resolved.json").read_text())
    assert resolved["attn_layers"] == "1,3" and resolved["git_sha"]
    assert (out / "tokenizer.json").exists()


def test_dropped_attention_is_reseeded(world, tmp_path):
    student = _student(world, "hyb0", _distilled, attn_layers=[0])
    out = tmp_path / "hybrid"
    code, text = run("hybridize", student, "-o", out, "--count", "1", "--placement", "top")
    assert code == 0, text
    cfg, sd, _ = load_state(out)
    _, tsd, _ = load_state(world["teacher"])
    assert cfg.attention_layers == [3]
    assert torch.equal(sd["layers.0.mixer.C_proj.weight"], tsd["layers.0.mixer.q_proj.weight"])
    conv = sd["layers.0.mixer.conv1d.weight"]
    assert torch.equal(conv[:, 0, -1], torch.ones(conv.shape[0]))  # fresh seed, not distilled
    report = json.loads((out / "hybridize_report.json").read_text())
    assert report["reseeded"] == [0] and report["added"] == [3] and len(report["seeded"]) == 4 + 7


def test_hybrid_prefill_and_decode_equal_full_forward(world, tmp_path):
    student = _student(world, "distilled2", _distilled)
    out = tmp_path / "hybrid"
    assert run("hybridize", student, "-o", out, "--every", "2", "--offset", "1")[0] == 0
    model, _ = load_model(out)
    assert model.config.layer_types == ["mamba", "attention", "mamba", "attention"]
    ids, pix = image_inputs(model.config, batch=2, text_len=8)
    steps = 5
    with torch.no_grad():
        full = model(ids, pix)  # (b, l, V)
        cache = model.new_cache(2, capacity=4)  # small: the KV cache must grow
        parts = [model(ids[:, :-steps], pix, cache=cache)]
        parts += [model(ids[:, j:j + 1], cache=cache) for j in range(ids.shape[1] - steps, ids.shape[1])]
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-4, rtol=0)


# ---- auto -------------------------------------------------------------------------------------

def _broken(layer):
    def change(model):
        with torch.no_grad():
            model.layers[layer].mixer.out_proj.weight.mul_(200.0)
    return change


@pytest.mark.parametrize("bad", [1, 2])
def test_auto_is_deterministic_and_restores_the_broken_layer_first(world, bad):
    student = _student(world, f"broken{bad}", _broken(bad))
    kw = dict(k=1, placement="auto", data=world["data"], calib_samples=6, seed=3, batch_size=4)
    keep, scores = choose_layers(student, **kw)
    again, scores2 = choose_layers(student, **kw)
    assert keep == again == [bad]
    assert scores == scores2
    rows = scores["layers"]
    assert [r["layer"] for r in rows][0] == bad and sorted(r["layer"] for r in rows) == [0, 1, 2, 3]
    assert rows[0]["kl_drop"] > 2 * max(abs(r["kl_drop"]) for r in rows[1:])
    assert scores["tokens"] > 0 and scores["calibration"]["used"] == 6
    assert choose_layers(student, k=2, placement="last-of-block") == ([1, 3], None)


def test_auto_cli_writes_scores_and_keeps_existing_attention(world, tmp_path):
    student = _student(world, "hyb03", _broken(2), attn_layers=[0, 3])
    out = tmp_path / "hybrid"
    code, text = run("hybridize", student, "-o", out, "--count", "3", "--placement", "auto",
                     "--data", world["data"], "--calib-samples", "4")
    assert code == 0, text
    report = json.loads((out / "hybridize_report.json").read_text())
    assert report["attention_layers"] == [0, 2, 3] and report["retained"] == [0, 3] and report["added"] == [2]
    assert sorted(r["layer"] for r in report["scores"]["layers"]) == [1, 2]
    assert report["scores"]["calibration"]["records"] and report["attention_differed"] == []
    assert "layer sensitivity" in text
    code, text = run("hybridize", student, "-o", tmp_path / "h2", "--count", "1", "--placement", "auto",
                     "--data", world["data"])
    assert code == 2 and "auto only adds" in text and not (tmp_path / "h2").exists()


def test_calibration_draw_is_reproducible(world):
    from mmmamba_cli.io.tokenizer import load_tokenizer

    tok = load_tokenizer(world["seeded"], world["seeded"])
    cfg = load_state(world["seeded"])[0]
    a, sa = calibration_items(world["data"], tok, cfg, 3, seed=1)
    b, sb = calibration_items(world["data"], tok, cfg, 3, seed=1)
    c, sc = calibration_items(world["data"], tok, cfg, 3, seed=2)
    assert sa["records"] == sb["records"] and len(sa["records"]) == 3
    assert all(torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(a, b))
    assert sa["records"] != sc["records"]
