"""What an evaluation task is made of: items (question, reference answers, images) and a kind."""
from __future__ import annotations

import io
import os
from dataclasses import dataclass, field

from PIL import Image

from ..errors import UserError

ImageSource = str | bytes  # a file path, or the encoded bytes of an image (a TSV's base64 column)


@dataclass
class EvalItem:
    index: str
    question: str
    answers: list[str]  # acceptable answers; for multiple choice the single correct letter
    images: list[ImageSource] = field(default_factory=list)
    sizes: list[tuple[int, int]] = field(default_factory=list)  # (width, height) of each image
    options: dict[str, str] = field(default_factory=dict)  # letter -> option text, in order
    hint: str = ""
    category: str = ""
    image_key: str = ""  # items with the same key ask about the same image (MME's acc+)

    def where(self) -> str:
        return f"item {self.index}"


@dataclass
class Task:
    name: str
    kind: str  # a key of kinds.KINDS
    items: list[EvalItem]
    source: str  # file path or "built-in"
    suffix: str  # appended to every question
    max_new_tokens: int
    extra_metrics: tuple[str, ...] = ()  # e.g. ("mme",)

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind, "source": self.source, "items": len(self.items),
                "suffix": self.suffix, "max_new_tokens": self.max_new_tokens,
                "extra_metrics": list(self.extra_metrics)}


def image_header(source: ImageSource, where: str) -> tuple[int, int]:
    """(width, height) read from the header only; ``UserError`` naming ``where`` if unreadable."""
    if isinstance(source, str) and not os.path.isfile(source):
        raise UserError(f"{where}: image not found: {source}")
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            return image.size
    except Exception as exc:  # PIL raises many kinds on corrupt data
        raise UserError(f"{where}: cannot decode image: {_one_line(exc)}") from None


def open_image(source: ImageSource, where: str) -> Image.Image:
    """Fully decoded RGB image; ``UserError`` naming ``where`` if that fails."""
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            image.load()
            return image.convert("RGB")
    except Exception as exc:
        raise UserError(f"{where}: cannot decode image: {_one_line(exc)}") from None


def _one_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
