"""From an item to model inputs: question text (hint, question, options, suffix), then token ids
in the model's chat template and the image tiles."""
from __future__ import annotations

import torch

from ..data import RecordError
from ..data.prompt import prompt_ids
from ..data.images import count_tiles, load_image
from ..errors import UserError
from ..model.config import ModelConfig
from .items import EvalItem, open_image


def question_text(item: EvalItem, suffix: str) -> str:
    """``hint\\nquestion\\nA. text\\nB. text\\nsuffix`` (absent parts left out)."""
    parts = [item.hint] if item.hint else []
    parts.append(item.question)
    parts += [f"{letter}. {text}" for letter, text in item.options.items()]
    if suffix:
        parts.append(suffix)
    return "\n".join(parts)


def prompt_inputs(item: EvalItem, suffix: str, tokenizer, config: ModelConfig) -> dict:
    """``{"input_ids": [ids] ending with the assistant header, "pixel_values": (k, 3, S, S) | None}``."""
    text = question_text(item, suffix)
    if item.images and config.vision is None:
        raise UserError(f"{item.where()} has an image but the model has no vision settings")
    tiles = [load_image(open_image(src, item.where()), config.vision) for src in item.images]
    try:
        ids = prompt_ids(tokenizer, config, text, [t.shape[0] for t in tiles])
    except (RecordError, ValueError) as exc:
        raise UserError(f"{item.where()}: {exc}") from None
    return {"input_ids": ids, "pixel_values": torch.cat(tiles) if tiles else None}


def estimated_length(item: EvalItem, config: ModelConfig) -> int:
    """A cheap length estimate (image tokens dominate) used to batch similar prompts together."""
    n = len(item.question) // 4 + sum(len(o) for o in item.options.values()) // 4
    if config.vision is not None:
        n += sum(count_tiles(w, h, config.vision) for w, h in item.sizes) * config.vision.tokens_per_tile
    return n
