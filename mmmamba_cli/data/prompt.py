"""The one prompt builder of ``generate``, ``eval``, distillation data and the lm-eval model.

Which chat format a model gets:

- a text-only model (no vision settings) whose tokenizer has a chat template: that template
  (``tokenizer.apply_chat_template(..., add_generation_prompt=True)``), as the model was tuned;
- otherwise (HoVLE and its students, or a tokenizer without a template): internlm2-chat
  (:mod:`mmmamba_cli.data.template`), with the model's system prompt and image blocks;
- ``raw``: no chat wrapper at all, the text encoded the tokenizer's usual way (its own BOS
  convention), to continue a piece of text.
"""
from __future__ import annotations

from .template import IM_END, IM_START, build_prompt


def uses_chat_template(tokenizer, config) -> bool:
    """Whether prompts for this model go through the tokenizer's own chat template."""
    return getattr(config, "vision", None) is None and bool(getattr(tokenizer, "chat_template", None))


def prompt_ids(tokenizer, config, question: str, tiles_per_image: list[int] | tuple = (),
               raw: bool = False) -> list[int]:
    """Token ids of a one-question generation prompt (ending where the answer starts).

    ``tiles_per_image``: tile counts of the images the question refers to (internlm2-chat only;
    ``<image>`` placeholders are added when the question has none).
    """
    if raw:
        if tiles_per_image:
            raise ValueError("a raw prompt cannot hold images")
        return list(tokenizer.encode(question))
    if uses_chat_template(tokenizer, config) and not tiles_per_image:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=True,
                                            add_generation_prompt=True)
        return list(ids["input_ids"] if hasattr(ids, "keys") else ids)  # a BatchEncoding in newer transformers
    vision = getattr(config, "vision", None)
    tokens_per_tile = vision.tokens_per_tile if vision is not None else 0
    return build_prompt(tokenizer, question, list(tiles_per_image), tokens_per_tile,
                        getattr(config, "system_prompt", "") or "")


def render_chat(tokenizer, config, messages: list[dict], add_generation_prompt: bool = True) -> str:
    """A whole chat ``[{"role", "content"}]`` as prompt text, in the same format as :func:`prompt_ids`."""
    if uses_chat_template(tokenizer, config):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    text = "".join(f"{IM_START}{m['role']}\n{m['content']}{IM_END}" for m in messages)
    return text + (f"{IM_START}assistant\n" if add_generation_prompt else "")
