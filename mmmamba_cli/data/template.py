"""The "internlm2-chat" template and its token-exact encoding (SPEC section 1).

Rendered text (the system turn is left out when the system prompt is empty)::

    <|im_start|>system\\n{SYS}<|im_end|><|im_start|>user\\n{Q}<|im_end|><|im_start|>assistant\\n{A}<|im_end|>...

Each ``<image>`` in a user turn becomes ``<img>`` + ``<IMG_CONTEXT>`` x (tokens_per_tile * tiles) +
``</img>``. Text is tokenized segment by segment with ``add_special_tokens=False``, so the labels
have exact boundaries: only assistant answers and their closing ``<|im_end|>`` are supervised.
A BOS comes first only if the tokenizer itself adds one (as InternLM2's does). Labels are
aligned with ``input_ids`` (not shifted); the loss does the shift.
"""
from __future__ import annotations

import functools

from .errors import RecordError, RecordTooLong

IMAGE_PLACEHOLDER = "<image>"
IMG_START = "<img>"
IMG_END = "</img>"
IMG_CONTEXT = "<IMG_CONTEXT>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
IGNORE_INDEX = -100

# InternVL/LLaVA "from" values (and their chat-style aliases) -> template role
ROLE_OF = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
           "system": "system"}


def encode_conversation(tokenizer, conversations: list[dict], tiles_per_image: list[int],
                        tokens_per_tile: int, system_prompt: str = "",
                        max_length: int | None = None) -> dict[str, list[int]]:
    """Encode an InternVL conversation ``[{"from", "value"}, ...]`` for training.

    Returns ``{"input_ids", "labels"}`` (equal lengths, -100 outside assistant answers). Raises
    ``RecordError`` (a ``ValueError``) for a malformed conversation or a placeholder count that does
    not match the images, ``RecordTooLong`` when longer than ``max_length``.
    """
    system, turns = _turns(conversations, system_prompt)
    if not any(role == "assistant" for role, _ in turns):
        raise RecordError("conversation has no assistant ('gpt') turn to supervise")
    out = _encode(tokenizer, system, turns, tiles_per_image, tokens_per_tile)
    check_length(len(out["input_ids"]), max_length)
    return out


def build_prompt(tokenizer, question: str, tiles_per_image: list[int], tokens_per_tile: int,
                 system_prompt: str = "") -> list[int]:
    """Token ids of a one-question prompt for generation, ending with ``<|im_start|>assistant\\n``."""
    out = _encode(tokenizer, system_prompt, [("user", question)], tiles_per_image, tokens_per_tile)
    return out["input_ids"] + _tokens(tokenizer, f"{IM_START}assistant\n")


def encode_chat_messages(tokenizer, messages: list[dict],
                         max_length: int | None = None) -> dict[str, list[int]]:
    """Encode ``[{"role", "content"}, ...]`` with the tokenizer's own chat template.

    Each assistant turn is supervised from the end of the generation prompt up to the end of the
    rendered turn (its closing tokens included). The template must render prefixes of the
    conversation as prefixes of the text; otherwise ``RecordError``.
    """
    _check_messages(messages)
    cuts = []  # (rendered prefix of the conversation, is its new part supervised?)
    for k, message in enumerate(messages):
        if message["role"] == "assistant":
            cuts.append((_render(tokenizer, messages[:k], generation=True), False))
            cuts.append((_render(tokenizer, messages[:k + 1], generation=False), True))
        else:
            cuts.append((_render(tokenizer, messages[:k + 1], generation=False), False))
    ids, labels, done = [], [], ""
    for text, train in cuts:
        if not text.startswith(done):
            raise RecordError("the tokenizer's chat template does not render prefixes stably")
        part = _tokens(tokenizer, text[len(done):])
        ids.extend(part)
        labels.extend(part if train else [IGNORE_INDEX] * len(part))
        done = text
    check_length(len(ids), max_length)
    return {"input_ids": ids, "labels": labels}


def check_length(n_tokens: int, max_length: int | None) -> None:
    if max_length is not None and n_tokens > max_length:
        raise RecordTooLong(f"{n_tokens} tokens > max_length {max_length}")


# ---- internals ------------------------------------------------------------------------------
def _turns(conversations, system_prompt: str) -> tuple[str, list[tuple[str, str]]]:
    """Validate turns; a leading system turn overrides ``system_prompt``."""
    if not isinstance(conversations, list) or not conversations:
        raise RecordError("'conversations' must be a non-empty list")
    system, turns = system_prompt, []
    for i, turn in enumerate(conversations):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise RecordError(f"turn {i} is not {{'from': ..., 'value': str}}")
        role = ROLE_OF.get(turn.get("from"))
        if role is None:
            raise RecordError(f"turn {i} has unknown role {turn.get('from')!r}")
        if role == "system" and i > 0:
            raise RecordError(f"turn {i}: a system turn may only come first")
        if role == "system":
            system = turn["value"]
        else:
            turns.append((role, turn["value"]))
    return system, turns


def _check_messages(messages) -> None:
    if not isinstance(messages, list) or not messages:
        raise RecordError("'messages' must be a non-empty list")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant") \
                or not isinstance(m.get("content"), str):
            raise RecordError(f"message {i} is not {{'role': system|user|assistant, 'content': str}}")
    if messages[0]["role"] == "assistant":
        raise RecordError("messages start with an assistant turn")
    if not any(m["role"] == "assistant" for m in messages):
        raise RecordError("messages have no assistant turn to supervise")


def _place_images(turns: list[tuple[str, str]], n_images: int) -> list[tuple[str, str]]:
    """Check the ``<image>`` count; prepend placeholders to the first user turn when there are none."""
    if any(IMAGE_PLACEHOLDER in text for role, text in turns if role != "user"):
        raise RecordError(f"{IMAGE_PLACEHOLDER} placeholder outside a user turn")
    found = sum(text.count(IMAGE_PLACEHOLDER) for role, text in turns if role == "user")
    if n_images and not found:
        first = next((i for i, (role, _) in enumerate(turns) if role == "user"), None)
        if first is None:
            raise RecordError("record has images but no user turn")
        turns = list(turns)
        turns[first] = ("user", f"{IMAGE_PLACEHOLDER}\n" * n_images + turns[first][1])
    elif found != n_images:
        raise RecordError(f"{found} {IMAGE_PLACEHOLDER} placeholder(s) for {n_images} image(s)")
    return turns


def conversation_parts(conversations: list[dict], n_images: int,
                       system_prompt: str = "") -> list[tuple[str | int, bool]]:
    """The template as a plan: ``[(text to tokenize | image number, supervised?), ...]``.

    Text parts are tokenized one by one with ``add_special_tokens=False`` (a BOS, when the
    tokenizer adds one, comes before them); image ``k`` becomes its ``<img>`` ... ``</img>`` block.
    Raises ``RecordError`` like ``encode_conversation``.
    """
    system, turns = _turns(conversations, system_prompt)
    if not any(role == "assistant" for role, _ in turns):
        raise RecordError("conversation has no assistant ('gpt') turn to supervise")
    return _parts(system, turns, n_images)


def _parts(system: str, turns, n_images: int) -> list[tuple[str | int, bool]]:
    turns = _place_images(turns, n_images)
    parts: list[tuple[str | int, bool]] = []
    if system:
        parts.append((f"{IM_START}system\n{system}{IM_END}", False))
    image = 0
    for role, text in turns:
        if role == "assistant":
            parts += [(f"{IM_START}assistant\n", False), (text + IM_END, True)]
            continue
        pieces = text.split(IMAGE_PLACEHOLDER)  # n placeholders -> n + 1 text pieces
        pieces[0] = f"{IM_START}user\n{pieces[0]}"
        pieces[-1] += IM_END
        parts.append((pieces[0], False))
        for piece in pieces[1:]:
            parts += [(image, False), (piece, False)]
            image += 1
    return parts


def _encode(tokenizer, system: str, turns, tiles_per_image, tokens_per_tile) -> dict[str, list[int]]:
    ids, labels = list(_bos(tokenizer)), [IGNORE_INDEX] * len(_bos(tokenizer))
    for part, train in _parts(system, turns, len(tiles_per_image)):
        part = _tokens(tokenizer, part) if isinstance(part, str) else \
            _image_block(tokenizer, tiles_per_image[part] * tokens_per_tile)
        ids.extend(part)
        labels.extend(part if train else [IGNORE_INDEX] * len(part))
    return {"input_ids": ids, "labels": labels}


def _image_block(tokenizer, n_context: int) -> list[int]:
    start, context, end = (_special_id(tokenizer, t) for t in (IMG_START, IMG_CONTEXT, IMG_END))
    return [start] + [context] * n_context + [end]


def _special_id(tokenizer, token: str) -> int:
    tid = tokenizer.convert_tokens_to_ids(token)
    if tid is None or (tid == tokenizer.unk_token_id and token != tokenizer.unk_token):
        raise ValueError(f"the tokenizer has no {token!r} token")
    return tid


@functools.lru_cache(maxsize=8)
def _bos(tokenizer) -> tuple[int, ...]:
    """``[bos]`` when the tokenizer itself starts encodings with BOS (InternLM2, Llama), else []."""
    bos = tokenizer.bos_token_id
    return (bos,) if bos is not None and tokenizer.encode("a")[:1] == [bos] else ()


def _tokens(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False) if text else []


def _render(tokenizer, messages: list[dict], generation: bool) -> str:
    if not messages:
        return ""
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False,
                                             add_generation_prompt=generation)
    except Exception as exc:  # jinja templates reject records with their own exceptions
        raise RecordError(f"chat template failed: {str(exc).strip()[:200]}") from None
