"""The data index: same items as the one-record encoder, cached by fingerprint, text windows, sources."""
import dataclasses
import json

import pytest
import torch
from PIL import Image

from mmmamba_cli.data import (IMG_CONTEXT, IndexSettings, RecordError, build_index,
                              build_word_tokenizer, index_dir, load_sft_dataset, open_index)
from mmmamba_cli.data import index as index_module
from mmmamba_cli.data.images import count_tiles
from mmmamba_cli.data.jsonl import encode_record, parse_record
from mmmamba_cli.model.config import VisionSettings, preset

torch.set_num_threads(1)
VISION = VisionSettings(image_size=32, patch_size=8, max_tiles=4, use_thumbnail=True)
WORDS = "what is the blue shape circle hello world yes no be brief a b c d e".split()


@pytest.fixture(scope="module")
def tok():
    return build_word_tokenizer([" ".join(WORDS)])


@pytest.fixture(scope="module")
def config(tok):
    return dataclasses.replace(preset("tiny"), vision=VISION, system_prompt="be brief",
                               img_context_token_id=tok.convert_tokens_to_ids(IMG_CONTEXT))


def conv(*turns):
    return [{"from": role, "value": value} for role, value in zip(["human", "gpt"] * 4, turns)]


def write_jsonl(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


@pytest.fixture
def images(tmp_path):
    sizes = {"wide.png": (64, 32), "square.png": (32, 32), "tall.png": (20, 70)}
    for name, size in sizes.items():
        Image.new("RGB", size, (9, 90, 200)).save(tmp_path / name)
    return sizes


def records():
    return [
        {"image": "wide.png", "conversations": conv("<image>\nwhat is the blue shape?", "circle",
                                                      "and now?", "hello world")},
        {"image": ["square.png", "tall.png"], "conversations": conv("a <image> b <image> c", "yes")},
        {"image": "tall.png", "conversations": [{"from": "system", "value": "no"}, *conv("what", "no")]},
        {"conversations": conv("hello world", "yes")},
        {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b c"}]},
        {"text": "hello world yes no"},
    ]


def test_index_items_equal_the_one_record_encoder(tok, config, tmp_path, images, monkeypatch):
    monkeypatch.setattr(index_module, "PARALLEL_MIN_ROWS", 2)  # two map processes even for a small file
    path = write_jsonl(tmp_path / "d.jsonl", records() * 3)
    data, stats = load_sft_dataset(path, tok, config, max_length=None, num_proc=2)
    assert stats.kept == len(data) == 18 and stats.bad == 0
    for i, raw in enumerate(path.read_bytes().splitlines()):
        record = parse_record(raw, tmp_path)
        tiles = [count_tiles(*images[p.split("/")[-1]], VISION) for p in record["images"]]
        want = encode_record(record, tok, config, tiles)
        item = data[i]
        assert item["input_ids"].tolist() == want["input_ids"], i
        assert item["labels"].tolist() == want["labels"], i
        assert data.lengths[i] == len(want["input_ids"])
        n_tiles = 0 if item["pixel_values"] is None else item["pixel_values"].shape[0]
        assert n_tiles == sum(tiles)
        assert (item["input_ids"] == config.img_context_token_id).sum() == sum(tiles) * VISION.tokens_per_tile
    assert stats.tokens == sum(data.lengths)


def test_index_is_built_once_then_opened_and_fingerprinted(tok, config, tmp_path, images):
    path = write_jsonl(tmp_path / "d.jsonl", records())
    cache = tmp_path / "cache"
    settings = IndexSettings(max_length=64)
    first = build_index(path, tok, config, settings, cache)
    stamp = (first / "stats.json").stat().st_mtime_ns
    assert build_index(path, tok, config, settings, cache) == first  # found, not rebuilt
    assert (first / "stats.json").stat().st_mtime_ns == stamp
    data, _ = open_index(first, config)
    assert all(f.startswith(str(first)) for f in (c["filename"] for c in data.rows.cache_files))  # memory-mapped
    assert index_dir(path, tok, config, IndexSettings(max_length=65), cache) != first
    assert index_dir(path, tok, dataclasses.replace(config, system_prompt=""), settings, cache) != first
    other = build_word_tokenizer([" ".join(WORDS + ["extra"])])
    assert index_dir(path, other, config, settings, cache) != first
    write_jsonl(path, records()[:2])  # the data changed
    assert index_dir(path, tok, config, settings, cache) != first
    assert sorted(p.name for p in cache.iterdir()) == [first.name]  # no build leftovers


def test_bad_records_are_reported_by_line_and_strict_caches_nothing(tok, config, tmp_path, images):
    path = write_jsonl(tmp_path / "d.jsonl", [records()[0], "{not json", {"image": "gone.png", "conversations":
                                                                          conv("a", "b")}])
    data, stats = load_sft_dataset(path, tok, config)
    assert (stats.kept, stats.bad, stats.bad_lines) == (1, 2, [2, 3])
    assert stats.messages[0].startswith("line 2: bad JSON") and "gone.png" in stats.messages[1]
    cache = tmp_path / "cache"
    with pytest.raises(RecordError, match="^line 2: bad JSON"):
        build_index(path, tok, config, IndexSettings(strict=True), cache)
    assert not any(cache.iterdir())


def test_long_text_is_split_into_windows_or_dropped(tok, config, tmp_path):
    text = " ".join(WORDS * 3)  # 48 words
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": text}, {"text": "a b"}])
    full = tok.encode(text)
    data, stats = load_sft_dataset(path, tok, config, max_length=20)
    assert [len(data[i]["input_ids"]) for i in range(len(data))] == [20, 20, len(full) - 40, 2]
    assert torch.cat([data[i]["input_ids"] for i in range(3)]).tolist() == full
    assert all(torch.equal(data[i]["labels"], data[i]["input_ids"]) for i in range(4))
    assert (stats.lines, stats.kept, stats.too_long) == (2, 4, 0)
    dropped, stats = load_sft_dataset(path, tok, config, max_length=20, long_text="drop")
    assert len(dropped) == 1 and stats.too_long_lines == [1]


def test_txt_files_and_directories_of_shards(tok, config, tmp_path, images):
    shards = tmp_path / "shards"
    (shards / "b").mkdir(parents=True)
    (shards / "a.txt").write_text("hello world\nyes no\n\n\nwhat is the blue shape\n")
    write_jsonl(shards / "b" / "part-0.jsonl", [{"text": "a b c"}, "{broken"])
    (shards / "notes.md").write_text("ignored")
    data, stats = load_sft_dataset(shards, tok, config, image_root=tmp_path)
    decoded = [tok.decode(data[i]["input_ids"]) for i in range(len(data))]
    assert decoded == ["hello world yes no", "what is the blue shape", "a b c"]
    assert stats.lines == 4 and stats.bad == 1 and stats.messages == [
        "part-0.jsonl line 2: bad JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"]
    single, _ = load_sft_dataset(shards / "a.txt", tok, config)
    assert len(single) == 2
