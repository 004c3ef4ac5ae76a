"""HoVLE's sentencepiece tokenizer loads natively, token for token with sentencepiece, and no
Python file from a model directory runs without ``--trust-remote-code``."""
from __future__ import annotations

import io
import json

import pytest
import torch

from mmmamba_cli.errors import UserError
from mmmamba_cli.io.tokenizer import allow_remote_code, load_tokenizer

spm = pytest.importorskip("sentencepiece")
torch.set_num_threads(1)

CORPUS = ["the quick brown fox jumps over the lazy dog", "what color is the shape?", "a red circle, a blue square",
          "Describe the image specifically.", "hello world 123 numbers 4567", "user assistant system\nnew line",
          "  two  spaces and\ttabs"] * 10
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
ADDED = [IM_START, IM_END, "<img>", "</img>", "<IMG_CONTEXT>"]
TEXTS = ["what color is the shape?", "héllo wörld ✓ 😀", "  leading spaces", "tabs\tand\nnew lines\n",
         "unseen zyxwvq", "x", "The Quick, BROWN fox!!"]


def train_sp(dummy_prefix: bool, vocab: int = 340, byte_fallback: bool = True, user_defined=()) -> bytes:
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS), model_writer=out, vocab_size=vocab, model_type="bpe",
        byte_fallback=byte_fallback, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, character_coverage=1.0,
        normalization_rule_name="identity", add_dummy_prefix=dummy_prefix, remove_extra_whitespaces=False,
        user_defined_symbols=list(user_defined), hard_vocab_limit=byte_fallback, minloglevel=2)
    return out.getvalue()


def internlm2_dir(path, proto: bytes, added: dict[str, int], plant: bool = True, **config):
    """A tokenizer directory laid out like HoVLE's: tokenizer.model, a config naming InternLM2's
    tokenizer class through auto_map, and (planted) Python that records being run."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "tokenizer.model").write_bytes(proto)
    cfg = {"tokenizer_class": "InternLM2Tokenizer",
           "auto_map": {"AutoTokenizer": ["tokenization_internlm2.InternLM2Tokenizer", None]},
           "added_tokens_decoder": {str(i): {"content": t, "special": True, "lstrip": False, "rstrip": False,
                                             "single_word": False, "normalized": False} for t, i in added.items()},
           "bos_token": "<s>", "eos_token": "</s>", "pad_token": "</s>", "unk_token": "<unk>", **config}
    (path / "tokenizer_config.json").write_text(json.dumps(cfg))
    if plant:
        marker = path.parent / f"{path.name}-RAN"
        (path / "tokenization_internlm2.py").write_text(
            f"open({str(marker)!r}, 'w').write('ran')\nraise ImportError('planted code ran')\n")
    return path


def reference(sp, added: dict[str, int], text: str, bos: bool = True) -> list[int]:
    """InternLM2's rule written out: split at added tokens, sentencepiece-encode each chunk, BOS first."""
    ids, rest = [1] if bos else [], text
    while rest:
        hits = [(rest.find(t), t) for t in added if t in rest]
        if not hits:
            ids += sp.encode(rest)
            break
        at, token = min(hits)
        ids += (sp.encode(rest[:at]) if at else []) + [added[token]]
        rest = rest[at + len(token):]
    return ids


@pytest.mark.parametrize("dummy_prefix", [True, False])
def test_native_internlm2_tokenizer_matches_sentencepiece(tmp_path, dummy_prefix):
    proto = train_sp(dummy_prefix)
    sp = spm.SentencePieceProcessor(model_proto=proto)
    n = sp.get_piece_size()
    added = {t: n + i for i, t in enumerate(ADDED)}
    tok = load_tokenizer(internlm2_dir(tmp_path / "tok", proto, added))
    assert not (tmp_path / "tok-RAN").exists()
    for text in TEXTS:
        assert tok.encode(text) == [1] + sp.encode(text), text
        assert tok.encode(text, add_special_tokens=False) == sp.encode(text)
        assert tok.decode(tok.encode(text), skip_special_tokens=True) == sp.decode(sp.encode(text))
    turn = f"{IM_START}user\nwhat color?<img><IMG_CONTEXT><IMG_CONTEXT></img>{IM_END}{IM_START}assistant\n"
    assert tok.encode(turn) == reference(sp, added, turn)
    first, second = (sp.decode(sp.encode(t)) for t in ("user\nwhat color?", "assistant\n"))
    assert tok.decode(tok.encode(turn, add_special_tokens=False)) == (
        f"{IM_START}{first}<img><IMG_CONTEXT><IMG_CONTEXT></img>{IM_END}{IM_START}{second}")
    assert [tok.convert_tokens_to_ids(t) for t in ADDED] == [added[t] for t in ADDED]
    assert (tok.bos_token_id, tok.eos_token_id, tok.unk_token_id, tok.pad_token_id) == (1, 2, 0, 2)
    assert len(tok) == n + len(ADDED)
    batch = tok(["x", "what color is the shape?"], padding=True)
    assert batch["input_ids"][0][-1] == 2 and batch["attention_mask"][0][-1] == 0  # pads with </s>


def test_added_tokens_json_and_bos_eos_switches(tmp_path):
    proto = train_sp(True)
    sp = spm.SentencePieceProcessor(model_proto=proto)
    n = sp.get_piece_size()
    d = internlm2_dir(tmp_path / "tok", proto, {IM_START: n}, add_bos_token=False, add_eos_token=True,
                      eos_token=IM_END)
    (d / "added_tokens.json").write_text(json.dumps({IM_END: n + 1}))
    tok = load_tokenizer(d)
    assert tok.eos_token == IM_END and tok.eos_token_id == n + 1
    assert tok.encode("what color") == sp.encode("what color") + [n + 1]
    assert tok.encode(f"{IM_START}x{IM_END}", add_special_tokens=False) == [n] + sp.encode("x") + [n + 1]


def test_planted_code_runs_only_when_trusted(tmp_path):
    proto = train_sp(True)
    d = internlm2_dir(tmp_path / "tok", proto, {IM_START: 400})
    load_tokenizer(d)
    with allow_remote_code(False):
        load_tokenizer(d)
    assert not (tmp_path / "tok-RAN").exists()
    with pytest.raises(UserError):
        load_tokenizer(d, trust_remote_code=True)  # the planted file raises after leaving its mark
    assert (tmp_path / "tok-RAN").exists()


def test_code_only_tokenizer_is_refused_in_one_line(tmp_path, monkeypatch):
    """A tokenizer that exists only as shipped code: refused without the opt-in, named in one line."""
    from mmmamba_cli.assets import default_teacher

    d = tmp_path / "evil"
    d.mkdir()
    src = default_teacher()
    (d / "tokenizer.json").write_bytes((src / "tokenizer.json").read_bytes())
    cfg = json.loads((src / "tokenizer_config.json").read_text())
    cfg.update(tokenizer_class="EvilTokenizer", auto_map={"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]})
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    (d / "tokenization_evil.py").write_text(f"open({str(tmp_path / 'RAN')!r}, 'w').write('x')\n")
    monkeypatch.delenv("MMMAMBA_TRUST_REMOTE_CODE", raising=False)
    with pytest.raises(UserError) as e:
        load_tokenizer(d)
    assert "--trust-remote-code" in str(e.value) and "tokenization_evil.py" in str(e.value)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "RAN").exists()
    monkeypatch.setenv("MMMAMBA_TRUST_REMOTE_CODE", "1")  # the lm-eval entry's opt-in
    with pytest.raises(UserError):
        load_tokenizer(d)
    assert (tmp_path / "RAN").exists()


def test_copy_tokenizer_carries_no_code(tmp_path):
    from mmmamba_cli.io.save import copy_tokenizer

    d = internlm2_dir(tmp_path / "tok", train_sp(True), {IM_START: 400})
    (tmp_path / "out").mkdir()
    copied = copy_tokenizer(d, tmp_path / "out")
    assert sorted(copied) == ["tokenizer.model", "tokenizer_config.json"]
    assert "auto_map" not in json.loads((tmp_path / "out" / "tokenizer_config.json").read_text())
    assert not list((tmp_path / "out").glob("*.py"))
    load_tokenizer(tmp_path / "out")
    (tmp_path / "trusted").mkdir()
    assert "tokenization_internlm2.py" in copy_tokenizer(d, tmp_path / "trusted", trust_remote_code=True)


@pytest.mark.parametrize("dummy_prefix", [True, False])
def test_chat_prompt_is_the_rendered_template_encoded_the_internlm2_way(tmp_path, dummy_prefix):
    from mmmamba_cli.data import build_prompt

    proto = train_sp(dummy_prefix)
    sp = spm.SentencePieceProcessor(model_proto=proto)
    added = {t: sp.get_piece_size() + i for i, t in enumerate(ADDED)}
    tok = load_tokenizer(internlm2_dir(tmp_path / "tok", proto, added, plant=False))
    got = build_prompt(tok, "<image>\nwhat color is the shape?", [1], 2, "")
    rendered = (f"{IM_START}user\n<img><IMG_CONTEXT><IMG_CONTEXT></img>\nwhat color is the shape?{IM_END}"
                f"{IM_START}assistant\n")
    assert got == reference(sp, added, rendered)
