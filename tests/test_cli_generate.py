"""`mmmamba generate`: the CLI's answer equals greedy decoding written out here (full forward per token,
no cache); bad images are one line and exit code 2."""
from __future__ import annotations

import torch
from typer.testing import CliRunner

from mmmamba_cli.assets import default_teacher
from mmmamba_cli.cli.main import app
from mmmamba_cli.data import build_prompt, easyvqa_records, load_image
from mmmamba_cli.errors import UserError
from mmmamba_cli.io.load import load_model
from mmmamba_cli.io.tokenizer import load_tokenizer

torch.set_num_threads(1)
runner = CliRunner()


def run(*args):
    res = runner.invoke(app, list(map(str, args)), catch_exceptions=True)
    if isinstance(res.exception, UserError):
        return 2, str(res.exception)
    return res.exit_code, res.output


@torch.no_grad()
def greedy(path, question: str, image, steps: int) -> str:
    model, info = load_model(path)
    tok = load_tokenizer(info.tokenizer_dir)
    c = model.config
    pixels = load_image(image, c.vision)
    ids = torch.tensor([build_prompt(tok, "<image>\n" + question, [pixels.shape[0]], c.vision.tokens_per_tile,
                                     c.system_prompt)])
    new = []
    for _ in range(steps):
        nxt = int(model(ids, pixels)[0, -1].argmax())  # the whole sequence again: no cache involved
        if nxt == c.eos_token_id:
            break
        new.append(nxt)
        ids = torch.cat([ids, torch.tensor([[nxt]])], 1)
    return tok.decode(new, skip_special_tokens=True)


def test_generate_answers_like_greedy_decoding():
    teacher, record = default_teacher(), easyvqa_records("test")[0]
    question = record["question"]
    code, out = run("generate", teacher, "--prompt", question, "--image", record["image"], "--max-new-tokens", 6)
    assert code == 0, out
    expected = greedy(teacher, question, record["image"], 6)
    assert expected.strip() and out.strip() == expected.strip()


def test_generate_bad_image_is_one_line(tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    for image, needle in ((tmp_path / "nope.png", "no such file"), (junk, "cannot decode image")):
        code, text = run("generate", default_teacher(), "--prompt", "what shape?", "--image", image)
        assert code == 2 and needle in text and "\n" not in text.strip(), text
