"""A text-only Llama teacher end to end: prompts, plain-text eval, tied embeddings, text recipes.

Every model is a tiny random transformers Llama saved with ``save_pretrained`` (no downloads),
with a word tokenizer that carries a chat template; references come from transformers itself.
"""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from mmmamba_cli.cli.main import app
from mmmamba_cli.io.load import load_model
from mmmamba_cli.seed import seed_directory

transformers = pytest.importorskip("transformers")
torch.set_num_threads(1)
runner = CliRunner()

WORDS = ("the a one every small red big blue green dog cat bird tree sees finds likes eats runs sleeps "
         "and . ?").split()
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def texts(n: int, seed: int, length: int = 12) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    return [" ".join(WORDS[int(i)] for i in torch.randint(len(WORDS), (length,), generator=g)) for _ in range(n)]


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """(transformers model, its directory, tokenizer): tied embeddings, a chat template."""
    from mmmamba_cli.data import build_word_tokenizer

    tok = build_word_tokenizer(WORDS)
    tok.chat_template = CHAT_TEMPLATE
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                      pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    assert len(tok) <= config.vocab_size
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g) if "norm" in name
                    else 0.15 * torch.randn(p.shape, generator=g))
    model.eval()
    path = tmp_path_factory.mktemp("llama") / "teacher"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return model, path, tok


def run(*args):
    """Invoke the CLI the way the console script does (UserError -> exit 2, one line)."""
    from mmmamba_cli.errors import UserError

    r = runner.invoke(app, [str(a) for a in args], catch_exceptions=True)
    if isinstance(r.exception, UserError):
        return 2, str(r.exception)
    return r.exit_code, r.output + (repr(r.exception) if r.exception and r.exit_code else "")


def hf_greedy(model, ids: list[int], n: int, tok) -> str:
    out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                         max_new_tokens=n, do_sample=False, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, len(ids):], skip_special_tokens=True)


# ---- one prompt builder -------------------------------------------------------------------
def test_generate_uses_the_chat_template_and_raw_continues_text(llama):
    from mmmamba_cli.data.prompt import prompt_ids

    model, path, tok = llama
    question = "the small dog sees a bird ?"
    chat = tok.apply_chat_template([{"role": "user", "content": question}], tokenize=True, add_generation_prompt=True)
    chat = list(chat["input_ids"] if hasattr(chat, "keys") else chat)
    assert prompt_ids(tok, load_model(path)[0].config, question) == chat
    code, out = run("generate", path, "-p", question, "--max-new-tokens", 8)
    assert code == 0, out
    assert out.strip() == hf_greedy(model, chat, 8, tok).strip()
    # --raw: the continuation of the text itself, long enough that a hard wrap at 80 columns would show
    code, out = run("generate", path, "-p", question, "--raw", "--max-new-tokens", 40)
    expected = hf_greedy(model, tok.encode(question), 40, tok).strip()
    assert code == 0, out
    assert out.strip() == expected and (len(expected) > 80 or "\n" not in out.strip())


# ---- tied embeddings ------------------------------------------------------------------------
def test_tied_embeddings_stay_tied_in_the_student(llama, tmp_path):
    from safetensors import safe_open

    model, path, _ = llama
    seed_directory(path, tmp_path / "seed")
    student = load_model(tmp_path / "seed")[0]
    assert student.lm_head.weight is student.embed.embed_tokens.weight
    with safe_open(str(tmp_path / "seed" / "model.safetensors"), "pt") as f:
        assert "lm_head.weight" not in f.keys()
    new = sum(p.numel() for n, p in student.named_parameters()
              if any(r in n for r in ("conv1d", "dt_proj", "dt_bias", "A_log", "z_proj", "mixer.norm")))
    assert student.num_params() == sum(p.numel() for p in model.parameters()) + new


# ---- eval on plain text -------------------------------------------------------------------
def test_eval_on_text_records_matches_a_direct_kl(llama, tmp_path):
    model, path, tok = llama
    seed_directory(path, tmp_path / "seed")
    held = texts(5, seed=1, length=9) + texts(2, seed=2, length=15)  # two lengths: padding matters
    data = tmp_path / "held.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in held))
    code, out = run("eval", tmp_path / "seed", "--teacher", path, "--task", data, "-b", 3, "--out", tmp_path / "ev")
    assert code == 0, out
    report = json.loads((tmp_path / "ev" / "results.json").read_text())
    got = report["models"][1]["fidelity"]
    student = load_model(tmp_path / "seed")[0].eval()
    kl, agree, nll, tnll, n = 0.0, 0.0, 0.0, 0.0, 0
    with torch.no_grad():
        for t in held:
            ids = torch.tensor([tok.encode(t)])
            lt = F.log_softmax(model(ids).logits[0, :-1].double(), -1)  # transformers' teacher
            ls = F.log_softmax(student(ids)[0, :-1].double(), -1)
            kl += float((lt.exp() * (lt - ls)).sum())
            agree += float((lt.argmax(-1) == ls.argmax(-1)).sum())
            tgt = ids[0, 1:, None]
            nll -= float(ls.gather(-1, tgt).sum())
            tnll -= float(lt.gather(-1, tgt).sum())
            n += ids.shape[1] - 1
    assert got["tokens"] == n
    assert got["kl"] == pytest.approx(kl / n, rel=1e-4)
    assert got["top1_agreement"] == pytest.approx(agree / n)
    assert got["ppl"] == pytest.approx(float(torch.tensor(nll / n).exp()), rel=1e-4)
    assert report["models"][0]["fidelity"]["ppl"] == pytest.approx(float(torch.tensor(tnll / n).exp()), rel=1e-4)
    assert got["seconds"] >= 0 and report["models"][0]["fidelity"]["seconds"] >= 0
    code, msg = run("eval", tmp_path / "seed", "--task", data, "--out", tmp_path / "ev2")
    assert code == 2 and "--teacher" in msg


# ---- text recipes and per-stage overrides ---------------------------------------------------
def test_stage_all_takes_the_text_recipe_and_per_stage_overrides(llama, tmp_path):
    _, path, _ = llama
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts(12, seed=0)))
    run_dir = tmp_path / "run"
    seed_directory(path, run_dir / "seed")
    small = ["train.global_batch=2", "train.micro_batch=2", "train.device=cpu", "train.threads=1"]
    code, msg = run("distill", "--stage", "1", "-r", run_dir, "--data", data, "stage3.train.steps=1", *small)
    assert code == 2 and "stage 3" in msg and not (run_dir / "stage1").exists()
    code, out = run("distill", "--stage", "all", "-r", run_dir, "--data", data, "stage1.train.steps=3",
                    "stage2.train.steps=2", "stage3.train.steps=1", "stage3.optim.lr=1e-4", *small)
    assert code == 0, out
    recipes = {n: json.loads((run_dir / f"stage{n}" / "resolved.json").read_text())["recipe"] for n in (1, 2, 3)}
    assert [recipes[n]["train"]["steps"] for n in (1, 2, 3)] == [3, 2, 1]
    assert recipes[1]["optim"]["lr"] == 3e-3 and recipes[2]["optim"]["lr"] == 1e-3  # recipes/llm-stage*.yaml
    assert recipes[3]["optim"]["lr"] == 1e-4 and recipes[3]["train"]["precision"] == "no"


def test_default_recipe_and_override_split():
    from mmmamba_cli.distill.schema import default_recipe, split_stage_overrides
    from mmmamba_cli.errors import UserError
    from mmmamba_cli.model import preset

    assert default_recipe(preset("tiny")) is None  # a vision model keeps the paper's values
    common, per = split_stage_overrides(["optim.lr=1", "stage2.train.steps=4", "stage=2"], (1, 2, 3))
    assert common == ["optim.lr=1", "stage=2"] and per == {2: ["train.steps=4"]}
    with pytest.raises(UserError, match="stage 3"):
        split_stage_overrides(["stage3.train.steps=1"], (1, 2))


# ---- hybrid placement on a text student -----------------------------------------------------
def test_auto_placement_on_a_text_student(llama, tmp_path):
    from mmmamba_cli.hybrid.run import choose_layers
    from mmmamba_cli.io.load import load_state
    from mmmamba_cli.io.save import save_model_dir

    _, path, _ = llama
    seed_directory(path, tmp_path / "seed")
    config, sd, info = load_state(tmp_path / "seed")
    sd["layers.1.mixer.out_proj.weight"] = sd["layers.1.mixer.out_proj.weight"] * 200.0  # layer 1 is broken
    student = tmp_path / "student"
    save_model_dir(student, config, sd, info.tokenizer_dir)
    data = tmp_path / "text.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts(8, seed=4)))
    keep, scores = choose_layers(student, k=1, data=data, calib_samples=4, batch_size=2, score="local")
    assert keep == [1] and scores["method"] == "local" and scores["layers"][0]["layer"] == 1, scores
    assert scores["layers"][0]["error"] > 100 * scores["layers"][1]["error"]
    assert choose_layers(student, k=1, data=data, calib_samples=4, batch_size=2, score="kl")[1]["method"] == "kl"
    # a text student without --data and no recorded training data: told what to give
    code, msg = run("hybridize", student, "-o", tmp_path / "h", "--count", "1", "--placement", "auto")
    assert code == 2 and "--data" in msg and not (tmp_path / "h").exists()
    # records that cannot be used: the reason is named
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"txt": "no text field"}\n' * 3)
    code, msg = run("hybridize", student, "-o", tmp_path / "h", "--count", "1", "--placement", "auto", "--data", bad)
    assert code == 2 and "none of the 3 drawn records" in msg and "no 'conversations', 'messages' or 'text'" in msg
    # after a distillation stage the student's own training data is the default
    import shutil

    (student / "resolved.json").write_text(json.dumps({"command": "distill", "data": str(data)}))
    code, out = run("hybridize", student, "-o", tmp_path / "h", "--count", "1", "--placement", "auto",
                    "--calib-samples", "4", "--score", "local")
    assert code == 0, out
    report = json.loads((tmp_path / "h" / "hybridize_report.json").read_text())
    assert report["attention_layers"] == [1] and report["scores"]["calibration"]["data"] == str(data)
    shutil.rmtree(tmp_path / "h")
