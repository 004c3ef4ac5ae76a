"""Data layer: chat template, image tiling, jsonl SFT datasets, batching, easy-vqa, tiny tokenizer."""
from .collate import collate, pack
from .easyvqa import easyvqa_answers, easyvqa_records, write_easyvqa_jsonl
from .errors import RecordError, RecordTooLong
from .images import choose_grid, count_tiles, load_image
from .index import IndexSettings, LoadStats, SFTDataset, build_index, index_dir, load_sft_dataset, open_index
from .template import (IGNORE_INDEX, IM_END, IM_START, IMAGE_PLACEHOLDER, IMG_CONTEXT, IMG_END,
                       IMG_START, build_prompt, encode_chat_messages, encode_conversation)
from .tokenizer import build_word_tokenizer

__all__ = [
    "IGNORE_INDEX", "IMAGE_PLACEHOLDER", "IndexSettings", "build_index", "index_dir", "open_index", "IMG_CONTEXT", "IMG_END", "IMG_START", "IM_END",
    "IM_START", "LoadStats", "RecordError", "RecordTooLong", "SFTDataset", "build_prompt",
    "build_word_tokenizer", "choose_grid", "collate", "count_tiles", "pack", "easyvqa_answers",
    "easyvqa_records", "encode_chat_messages", "encode_conversation", "load_image",
    "load_sft_dataset", "write_easyvqa_jsonl",
]
