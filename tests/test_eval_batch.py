"""Batched generation with left padding: a batch of prompts of different lengths gives exactly the
answers each prompt gives alone, for linear and hybrid students, with images."""
from __future__ import annotations

import pytest
import torch

from conftest import tiny_teacher
from mmmamba_cli.data import collate
from mmmamba_cli.evaluate import EvalItem, Task, predict
from mmmamba_cli.runtime import SamplingSettings, generate
from test_eval_support import png_bytes, student, word_tokenizer

NEVER = 10 ** 6  # an EOS id that never comes: every row generates all its tokens


def prompts(config, lengths=(3, 11, 6, 1), seed=0):
    """One image per prompt; ``lengths`` text tokens after it."""
    g = torch.Generator().manual_seed(seed)
    n_img, s = config.vision.tokens_per_tile, config.vision.image_size
    items = []
    for n in lengths:
        ids = torch.cat([torch.randint(10, config.vocab_size, (2,), generator=g),
                         torch.full((n_img,), config.img_context_token_id),
                         torch.randint(10, config.vocab_size, (n,), generator=g)])
        items.append({"input_ids": ids, "pixel_values": torch.randn(1, 3, s, s, generator=g)})
    return items


@pytest.mark.parametrize("attn_layers", [[], [1, 3]], ids=["linear", "hybrid"])
def test_left_padded_batch_equals_each_prompt_alone(attn_layers):
    model = student(tiny_teacher(), attn_layers)
    assert model.config.kind == ("linear" if not attn_layers else "hybrid")
    items = prompts(model.config)
    settings = SamplingSettings(max_new_tokens=8, eos_token_id=NEVER)
    b = collate(items, pad_token_id=0, padding_side="left")
    batched = generate(model, b["input_ids"], b["pixel_values"], b["attention_mask"], settings)
    alone = [generate(model, it["input_ids"][None], it["pixel_values"], None, settings)[0] for it in items]
    assert batched == alone
    assert all(len(a) == 8 for a in alone)
    with torch.no_grad():  # prefill logits agree too, and the test has teeth: unmasked pads change them
        last = model(b["input_ids"], b["pixel_values"], b["attention_mask"], logits_to_keep=1)[:, -1]
        want = torch.cat([model(it["input_ids"][None], it["pixel_values"], logits_to_keep=1)[:, -1] for it in items])
        torch.testing.assert_close(last, want, atol=1e-5, rtol=1e-5)
        leaky = model(b["input_ids"], b["pixel_values"], None, logits_to_keep=1)[:, -1]
        assert not torch.allclose(leaky[0], want[0], atol=1e-3)  # row 0 is padded


@pytest.mark.parametrize("attn_layers", [[], [1, 3]], ids=["linear", "hybrid"])
def test_predict_batch_size_does_not_change_answers(attn_layers):
    model, tok = student(tiny_teacher(), attn_layers), word_tokenizer()
    questions = ["what", "what is the color of this", "is there a cat", "what shape is this red blue green circle"]
    items = [EvalItem(str(i), q, ["cat"], images=[png_bytes((40 * i, 0, 0))], sizes=[(24, 20)])
             for i, q in enumerate(questions)]
    task = Task("t", "vqa", items, "x", "answer", max_new_tokens=5)
    assert predict(model, tok, task, batch_size=4) == predict(model, tok, task, batch_size=1)
