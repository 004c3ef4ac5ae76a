"""Tiny model directories (teacher, linear and hybrid students) with a word tokenizer, for the
evaluation tests; the test here checks that such a directory loads back as it was saved."""
from __future__ import annotations

import base64
import io

import pytest
import torch
from PIL import Image

from conftest import randomize, tiny_teacher
from mmmamba_cli.data import build_word_tokenizer
from mmmamba_cli.io.save import save_model_dir
from mmmamba_cli.model import MMModel
from mmmamba_cli.model.layout import layer_types_for
from mmmamba_cli.seed import seed_state

torch.set_num_threads(1)  # tiny models: thread hand-offs cost more than they bring on a shared CPU

# few words: every id stays below the tiny vocabulary of 128
WORDS = "what is the color shape of this red blue green circle square yes no there a cat dog answer"


def word_tokenizer():
    return build_word_tokenizer([WORDS])


def student(teacher: MMModel, attn_layers: list[int], seed: int = 1) -> MMModel:
    """A student seeded from ``teacher``, then randomised so its Mamba layers are not near-identity."""
    c = teacher.config
    config, sd, _ = seed_state(c, teacher.state_dict(), layer_types_for(attn_layers, c.num_layers), seed)
    model = MMModel(config)
    model.load_state_dict(sd)
    return randomize(model.eval(), seed)


def save(model: MMModel, directory, tokenizer):
    tok_dir = directory.parent / f".{directory.name}-tokenizer"
    tokenizer.save_pretrained(str(tok_dir))
    save_model_dir(directory, model.config, model.state_dict(), tokenizer_dir=tok_dir)
    return directory


def png_bytes(color=(255, 0, 0), size=(24, 20)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def b64_png(color=(255, 0, 0)) -> str:
    return base64.b64encode(png_bytes(color)).decode()


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    """{"teacher", "linear", "hybrid"} -> model directory."""
    root = tmp_path_factory.mktemp("models")
    tok = word_tokenizer()
    t = tiny_teacher()
    return {"teacher": save(t, root / "teacher", tok), "linear": save(student(t, []), root / "linear", tok),
            "hybrid": save(student(t, [1, 3]), root / "hybrid", tok)}


def test_model_dir_round_trip(model_dirs):
    from mmmamba_cli.evaluate import load_for_eval

    model, tok, _ = load_for_eval(model_dirs["hybrid"], device="cpu")
    assert model.config.kind == "hybrid" and model.config.attention_layers == [1, 3]
    assert tok.convert_tokens_to_ids("<IMG_CONTEXT>") == model.config.img_context_token_id
    assert max(tok.get_vocab().values()) < model.config.vocab_size
    ids = torch.tensor([tok.encode("what is the color", add_special_tokens=False)])
    saved = student(tiny_teacher(), [1, 3])
    with torch.no_grad():
        assert torch.equal(model(ids), saved(ids))
