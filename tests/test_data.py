"""Data layer: template and labels, tiling, jsonl loading, collate, tokenizer, easy-vqa."""
import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from mmmamba_cli.data import (IGNORE_INDEX, IM_END, IM_START, IMG_CONTEXT, IMG_END, IMG_START,
                              RecordError, RecordTooLong, build_prompt, build_word_tokenizer,
                              choose_grid, collate, count_tiles, easyvqa_answers, easyvqa_records,
                              encode_chat_messages, encode_conversation, load_image,
                              load_sft_dataset, write_easyvqa_jsonl)
from mmmamba_cli.data.images import IMAGENET_MEAN, IMAGENET_STD
from mmmamba_cli.model.config import VisionSettings, preset

TPT = 4  # tokens per tile of the tiny vision settings below
TINY_VISION = VisionSettings(image_size=32, patch_size=8, max_tiles=4, use_thumbnail=True)
TEXTS = ["what is the blue shape?", "circle", "hello world", "yes no", "be brief", "a b c d e"]


@pytest.fixture(scope="module")
def tok():
    return build_word_tokenizer(TEXTS)


@pytest.fixture(scope="module")
def config(tok):
    assert TINY_VISION.tokens_per_tile == TPT
    return dataclasses.replace(preset("tiny"), vision=TINY_VISION,
                               img_context_token_id=tok.convert_tokens_to_ids(IMG_CONTEXT))


def ids(tok, text):
    return tok.encode(text, add_special_tokens=False)


def conv(*turns):
    return [{"from": role, "value": value} for role, value in zip(["human", "gpt"] * 4, turns)]


def save_png(path, size=(64, 32), color=(255, 0, 0)):
    Image.new("RGB", size, color).save(path)
    return str(path)


# ---- template ---------------------------------------------------------------------------------
def test_text_only_conversation_supervises_answer_and_im_end_only(tok):
    out = encode_conversation(tok, conv("hello world", "circle"), [], TPT)
    prompt = ids(tok, f"{IM_START}user\nhello world{IM_END}{IM_START}assistant\n")
    answer = ids(tok, f"circle{IM_END}")
    assert out["input_ids"] == prompt + answer
    assert out["labels"] == [IGNORE_INDEX] * len(prompt) + answer
    assert "system" not in tok.decode(out["input_ids"])


def test_bos_only_when_the_tokenizer_adds_one(tok):
    from tokenizers import processors

    with_bos = build_word_tokenizer(TEXTS)
    with_bos.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", with_bos.bos_token_id)])
    plain = encode_conversation(tok, conv("yes", "no"), [], TPT)
    out = encode_conversation(with_bos, conv("yes", "no"), [], TPT)
    assert out["input_ids"] == [with_bos.bos_token_id] + plain["input_ids"]
    assert out["labels"] == [IGNORE_INDEX] + plain["labels"]
    assert build_prompt(with_bos, "yes", [], TPT)[0] == with_bos.bos_token_id
    assert tok.bos_token_id not in plain["input_ids"]


def test_system_prompt_and_system_turn(tok):
    out = encode_conversation(tok, conv("yes", "no"), [], TPT, system_prompt="be brief")
    assert out["input_ids"][:5] == ids(tok, f"{IM_START}system\nbe brief{IM_END}")
    turns = [{"from": "system", "value": "hello"}] + conv("yes", "no")
    out2 = encode_conversation(tok, turns, [], TPT, system_prompt="be brief")
    assert tok.decode(out2["input_ids"][:4]) == f"{IM_START} system hello {IM_END}"


def test_multi_turn_supervises_every_answer(tok):
    out = encode_conversation(tok, conv("a", "b", "c", "d"), [], TPT)
    supervised = [t for t, label in zip(out["input_ids"], out["labels"]) if label != IGNORE_INDEX]
    assert supervised == ids(tok, f"b{IM_END}d{IM_END}")
    assert sum(label != IGNORE_INDEX for label in out["labels"]) == 4


def test_one_image_with_tiles_expands_in_place(tok):
    out = encode_conversation(tok, conv("<image>\nwhat is the blue shape?", "circle"), [3], TPT)
    x = out["input_ids"]
    start, ctx, end = tok.convert_tokens_to_ids([IMG_START, IMG_CONTEXT, IMG_END])
    assert x[:2] == ids(tok, f"{IM_START}user")
    assert x[2:2 + 3 * TPT + 2] == [start] + [ctx] * (3 * TPT) + [end]
    assert x.count(ctx) == 3 * TPT and len(out["labels"]) == len(x)


def test_two_images_expand_in_order(tok):
    out = encode_conversation(tok, conv("a <image> b <image> c", "yes"), [1, 2], TPT)
    text = tok.decode(out["input_ids"])
    one, two = " ".join([IMG_CONTEXT] * TPT), " ".join([IMG_CONTEXT] * 2 * TPT)
    assert f"a {IMG_START} {one} {IMG_END} b {IMG_START} {two} {IMG_END} c" in text


def test_missing_placeholder_is_prepended_and_mismatch_raises(tok):
    out = encode_conversation(tok, conv("what is the blue shape?", "circle"), [1], TPT)
    assert out["input_ids"][2] == tok.convert_tokens_to_ids(IMG_START)
    with pytest.raises(ValueError, match="2 <image> placeholder.*for 1 image"):
        encode_conversation(tok, conv("<image> <image> what", "yes"), [1], TPT)
    with pytest.raises(ValueError, match="1 <image> placeholder.*for 0 image"):
        encode_conversation(tok, conv("<image> what", "yes"), [], TPT)


def test_bad_conversations_raise(tok):
    with pytest.raises(RecordError, match="no assistant"):
        encode_conversation(tok, conv("hello"), [], TPT)
    with pytest.raises(RecordError, match="unknown role"):
        encode_conversation(tok, [{"from": "bot", "value": "x"}], [], TPT)
    with pytest.raises(RecordTooLong, match="max_length 5"):
        encode_conversation(tok, conv("hello world", "circle"), [], TPT, max_length=5)


def test_build_prompt_ends_with_assistant_header(tok):
    prompt = build_prompt(tok, "what is the blue shape?", [2], TPT, system_prompt="be brief")
    assert prompt[-2:] == ids(tok, f"{IM_START}assistant\n")
    assert prompt.count(tok.convert_tokens_to_ids(IMG_CONTEXT)) == 2 * TPT
    assert prompt[:2] == ids(tok, f"{IM_START}system")


def test_chat_template_messages_match_internlm2_rendering(tok):
    chat = build_word_tokenizer(TEXTS)
    chat.chat_template = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>"
                          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    messages = [{"role": "user", "content": "a b"}, {"role": "assistant", "content": "yes"},
                {"role": "user", "content": "c"}, {"role": "assistant", "content": "no"}]
    got = encode_chat_messages(chat, messages)
    assert got == encode_conversation(tok, conv("a b", "yes", "c", "no"), [], TPT)


# ---- images -------------------------------------------------------------------------------------
@pytest.mark.parametrize("size, max_tiles, grid", [
    ((448, 448), 12, (1, 1)), ((896, 448), 12, (2, 1)), ((448, 896), 12, (1, 2)),
    ((1792, 1792), 12, (3, 3)), ((1792, 1792), 4, (2, 2)), ((4000, 100), 12, (12, 1)),
    ((4000, 100), 4, (4, 1)), ((64, 64), 12, (1, 1)), ((1000, 600), 6, (3, 2)), ((1000, 600), 4, (2, 1)),
])
def test_choose_grid(size, max_tiles, grid):
    assert choose_grid(*size, 448, max_tiles) == grid
    assert grid[0] * grid[1] <= max_tiles


def test_tiles_and_thumbnail():
    vision = VisionSettings()  # 448 px tiles, up to 12, thumbnail on
    assert load_image(Image.new("RGB", (448, 448)), vision).shape == (1, 3, 448, 448)
    assert load_image(Image.new("RGB", (896, 448)), vision).shape == (3, 3, 448, 448)
    assert count_tiles(896, 448, vision) == 3 and count_tiles(1792, 1792, vision) == 10
    no_thumb = dataclasses.replace(vision, use_thumbnail=False)
    assert load_image(Image.new("RGB", (896, 448)), no_thumb).shape == (2, 3, 448, 448)


def test_tile_order_and_normalisation():
    image = Image.new("RGB", (64, 32), (255, 0, 128))
    image.paste((0, 0, 255), (32, 0, 64, 32))  # right half blue
    x = load_image(image, TINY_VISION)  # (2 tiles + thumbnail, 3, 32, 32)
    assert x.shape == (3, 3, 32, 32) and x.dtype == torch.float32
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    left = (torch.tensor([255, 0, 128]) / 255 - mean) / std
    right = (torch.tensor([0, 0, 255]) / 255 - mean) / std
    torch.testing.assert_close(x[0, :, 16, 4], left)  # away from the bicubic seam
    torch.testing.assert_close(x[1, :, 16, 28], right)


def test_grey_and_rgba_images_become_rgb(tmp_path):
    Image.new("L", (32, 32), 255).save(tmp_path / "g.png")
    Image.new("RGBA", (32, 32), (0, 0, 0, 0)).save(tmp_path / "a.png")
    grey = load_image(tmp_path / "g.png", TINY_VISION)
    assert grey.shape == (1, 3, 32, 32)
    torch.testing.assert_close(grey[0, :, 0, 0], (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD))
    assert load_image(tmp_path / "a.png", TINY_VISION).shape == (1, 3, 32, 32)


def test_image_errors_name_the_file(tmp_path):
    with pytest.raises(RecordError, match="image not found: .*nope.png"):
        load_image(tmp_path / "nope.png", TINY_VISION)
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(RecordError, match="cannot decode image .*junk.png"):
        load_image(tmp_path / "junk.png", TINY_VISION)


# ---- jsonl ----------------------------------------------------------------------------------------
def write_jsonl(path, lines):
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


@pytest.fixture
def messy_jsonl(tmp_path):
    save_png(tmp_path / "wide.png", (64, 32))  # 2 tiles + thumbnail
    (tmp_path / "junk.png").write_bytes(b"\x89PNG but not really")
    good = {"image": "wide.png", "conversations": conv("<image>\nwhat is the blue shape?", "circle")}
    return write_jsonl(tmp_path / "data.jsonl", [
        good,                                                                   # 1 kept
        '{"image": "wide.png", "conversations": [',                             # 2 bad JSON
        {"image": "missing.png", "conversations": conv("what", "yes")},         # 3 missing image
        {"image": "junk.png", "conversations": conv("what", "yes")},            # 4 undecodable
        {"image": "wide.png"},                                                  # 5 no conversations
        "",                                                                     # blank: ignored
        {"conversations": conv("hello world", "yes")},                          # 7 text-only
        {"text": "hello world"},                                                # 8 plain text
        {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},  # 9
        {"image": ["wide.png", "wide.png"], "conversations": conv("a b c d e " * 8, "yes")},  # 10 long
    ])


def test_jsonl_skips_and_counts_bad_lines(tok, config, messy_jsonl):
    data, stats = load_sft_dataset(messy_jsonl, tok, config, max_length=40)
    assert (stats.lines, stats.kept, stats.bad, stats.too_long) == (9, 4, 4, 1)
    assert stats.bad_lines == [2, 3, 4, 5] and stats.too_long_lines == [10]
    assert "line 3: image not found" in stats.messages[1] and "junk.png" in stats.messages[2]
    assert "kept 4 of 9" in stats.summary()
    assert len(data) == 4 and data.lengths == [len(data[i]["input_ids"]) for i in range(4)]
    item = data[0]
    assert item["pixel_values"].shape == (3, 3, 32, 32)
    assert item["input_ids"].dtype == torch.long and item["labels"].shape == item["input_ids"].shape
    assert (item["input_ids"] == config.img_context_token_id).sum() == 3 * TPT
    assert data[1]["pixel_values"] is None
    text = data[2]
    assert torch.equal(text["labels"], text["input_ids"]) and text["input_ids"].tolist() == ids(tok, "hello world")
    assert tok.decode(data[3]["labels"][data[3]["labels"] != IGNORE_INDEX]) == f"b {IM_END}"


def test_jsonl_strict_raises_with_line_number(tok, config, messy_jsonl):
    with pytest.raises(RecordError, match=r"^line 2: bad JSON"):
        load_sft_dataset(messy_jsonl, tok, config, strict=True)


def test_truncated_image_found_at_load_only_in_strict_mode(tok, config, tmp_path):
    save_png(tmp_path / "ok.png", (64, 64))
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])  # header fine, pixels missing
    path = write_jsonl(tmp_path / "d.jsonl", [{"image": "cut.png", "conversations": conv("a", "b")}])
    with pytest.raises(RecordError, match="line 1: cannot decode image .*cut.png"):
        load_sft_dataset(path, tok, config, strict=True)
    lazy, stats = load_sft_dataset(path, tok, config)
    assert stats.kept == 1
    with pytest.raises(RecordError, match="line 1: cannot decode image"):
        lazy[0]


def test_jsonl_image_root_and_absolute_paths(tok, config, tmp_path):
    (tmp_path / "imgs").mkdir()
    save_png(tmp_path / "imgs" / "x.png", (32, 32))
    absolute = str(tmp_path / "imgs" / "x.png")
    path = write_jsonl(tmp_path / "d.jsonl", [{"image": "x.png", "conversations": conv("a", "b")},
                                              {"image": absolute, "conversations": conv("a", "b")}])
    data, stats = load_sft_dataset(path, tok, config, image_root=tmp_path / "imgs")
    assert stats.kept == 2 and data[0]["pixel_values"].shape == (1, 3, 32, 32)


def test_jsonl_text_only_model_uses_the_tokenizers_chat_template(tok, config, tmp_path):
    chat = build_word_tokenizer(TEXTS)
    chat.chat_template = "{% for m in messages %}{{ m.role }} {{ m.content }} {% endfor %}" \
                         "{% if add_generation_prompt %}assistant {% endif %}"
    text_only = dataclasses.replace(config, vision=None)
    save_png(tmp_path / "x.png", (32, 32))
    path = write_jsonl(tmp_path / "d.jsonl", [
        {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "yes"}]},
        {"image": "x.png", "conversations": conv("a", "b")},  # no vision settings: skipped
    ])
    data, stats = load_sft_dataset(path, chat, text_only)
    assert stats.kept == 1 and "no vision settings" in stats.messages[0]
    item = data[0]
    assert chat.decode(item["input_ids"]) == "user a assistant yes"
    assert chat.decode(item["labels"][item["labels"] != IGNORE_INDEX]) == "yes"


def test_jsonl_rejects_a_tokenizer_that_disagrees_with_the_config(tok, config, messy_jsonl):
    wrong = dataclasses.replace(config, img_context_token_id=7)
    with pytest.raises(ValueError, match="img_context_token_id 7"):
        load_sft_dataset(messy_jsonl, tok, wrong)


# ---- collate ------------------------------------------------------------------------------------
def test_collate_right_and_left_padding():
    batch = [{"input_ids": torch.tensor([5, 6, 7]), "labels": torch.tensor([-100, 6, 7]),
              "pixel_values": torch.ones(2, 3, 4, 4)},
             {"input_ids": torch.tensor([8]), "labels": torch.tensor([8]), "pixel_values": None},
             {"input_ids": torch.tensor([9, 9]), "labels": torch.tensor([9, 9]),
              "pixel_values": torch.zeros(1, 3, 4, 4)}]
    right = collate(batch, pad_token_id=0)
    assert right["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0], [9, 9, 0]]
    assert right["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]
    assert right["labels"].tolist() == [[-100, 6, 7], [8, -100, -100], [9, 9, -100]]
    assert right["pixel_values"].shape == (3, 3, 4, 4) and right["pixel_values"][2].sum() == 0
    left = collate(batch, pad_token_id=0, padding_side="left")
    assert left["input_ids"].tolist() == [[5, 6, 7], [0, 0, 8], [0, 9, 9]]
    assert left["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1], [0, 1, 1]]
    prompts = collate([{"input_ids": [1, 2]}, {"input_ids": [3]}], 0, padding_side="left")
    assert prompts["labels"] is None and prompts["pixel_values"] is None
    with pytest.raises(ValueError, match="padding_side"):
        collate(batch, 0, padding_side="middle")


# ---- tokenizer ----------------------------------------------------------------------------------
def test_word_tokenizer_round_trip(tmp_path):
    from transformers import AutoTokenizer

    tok = build_word_tokenizer(["What is the BLUE shape?"], extra_special_tokens=["<extra>"])
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = f"{IM_START}user\n{IMG_START}{IMG_CONTEXT}{IMG_END}\nWhat is the blue shape?{IM_END}<extra>"
    x = loaded.encode(text, add_special_tokens=False)
    assert x == tok.encode(text, add_special_tokens=False)
    assert loaded.decode(x) == (f"{IM_START} user {IMG_START} {IMG_CONTEXT} {IMG_END} "
                                f"what is the blue shape ? {IM_END} <extra>")
    assert loaded.decode(x, skip_special_tokens=True) == "user what is the blue shape ?"
    assert (loaded.pad_token_id, loaded.pad_token, loaded.bos_token, loaded.eos_token,
            loaded.unk_token) == (0, "<pad>", "<s>", IM_END, "<unk>")
    assert loaded.encode("zebra assistant system") == [loaded.unk_token_id] + loaded.encode("assistant system")
    assert loaded.encode("what") == tok.encode("what") and len(loaded.encode("what")) == 1  # no BOS


# ---- easy-vqa -------------------------------------------------------------------------------------
def test_easyvqa_records_and_answers(tmp_path):
    answers = easyvqa_answers()
    assert len(answers) == 13 and {"circle", "yes", "no", "blue"} <= set(answers)
    test = easyvqa_records("test")
    assert len(test) > 0 and {r["answer"] for r in test} <= set(answers)
    first = test[0]
    assert first["conversations"][0]["value"] == "<image>\n" + first["question"]
    assert first["conversations"][1] == {"from": "gpt", "value": first["answer"]}
    path = write_easyvqa_jsonl("test", tmp_path / "vqa" / "test.jsonl")
    assert sum(1 for _ in path.open()) == len(test)
    with pytest.raises(ValueError, match="unknown easy-vqa split"):
        easyvqa_records("dev")


def test_easyvqa_loads_end_to_end(config, tmp_path):
    records = easyvqa_records("train")[:6]
    tok = build_word_tokenizer([r["question"] for r in records] + easyvqa_answers())
    cfg = dataclasses.replace(config, img_context_token_id=tok.convert_tokens_to_ids(IMG_CONTEXT))
    path = write_jsonl(tmp_path / "vqa.jsonl", records)
    data, stats = load_sft_dataset(path, tok, cfg, strict=True)
    assert stats.kept == 6 and stats.bad == 0
    batch = collate([data[i] for i in range(6)], tok.pad_token_id)
    assert batch["pixel_values"].shape == (6 * 5, 3, 32, 32)  # 64x64 -> 2x2 grid + thumbnail
    assert (batch["input_ids"] == cfg.img_context_token_id).sum() == 6 * 5 * TPT
    assert (batch["input_ids"] == tok.unk_token_id).sum() == 0
    answer = batch["labels"][0][batch["labels"][0] != IGNORE_INDEX]
    assert tok.decode(answer) == f"{records[0]['answer']} {IM_END}"
    assert np.isfinite(batch["pixel_values"].numpy()).all()
