"""Batched greedy answers: prompts of similar length are left-padded into one batch.

Left padding is exact for every layer type: attention masks the pad keys and Mamba layers zero
their input and dt at pads, so a pad never enters a conv or SSM state (``MMModel.prepare``).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from ..data import collate
from ..runtime import SamplingSettings, generate
from ..model.model import MMModel
from .items import EvalItem, Task
from .prompts import estimated_length, prompt_inputs


def batches(items: list[EvalItem], config, batch_size: int) -> Iterator[list[int]]:
    """Item indices in batches of similar estimated length."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    order = sorted(range(len(items)), key=lambda i: estimated_length(items[i], config))
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


def pad_id(model: MMModel, tokenizer) -> int:
    for candidate in (model.config.pad_token_id, tokenizer.pad_token_id, model.config.eos_token_id):
        if candidate is not None:
            return candidate
    return 0


@torch.no_grad()
def predict(model: MMModel, tokenizer, task: Task, batch_size: int = 32,
            progress: Callable[[int, int], None] | None = None) -> list[str]:
    """The generated answer text of every item of ``task``, in item order."""
    device = next(model.parameters()).device
    settings = SamplingSettings(max_new_tokens=task.max_new_tokens, temperature=0.0,
                                eos_token_id=model.config.eos_token_id)
    answers = [""] * len(task.items)
    done = 0
    for idx in batches(task.items, model.config, batch_size):
        batch = collate([prompt_inputs(task.items[i], task.suffix, tokenizer, model.config) for i in idx],
                        pad_id(model, tokenizer), padding_side="left")
        pixels = batch["pixel_values"].to(device) if batch["pixel_values"] is not None else None
        out = generate(model, batch["input_ids"].to(device), pixels, batch["attention_mask"].to(device), settings)
        for i, tokens in zip(idx, out):
            answers[i] = tokenizer.decode(tokens, skip_special_tokens=True).strip()
        done += len(idx)
        if progress is not None:
            progress(done, len(task.items))
    return answers
