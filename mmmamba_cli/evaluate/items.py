"""What an evaluation task is made of: items (question, reference answers, images) and a kind."""
from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image

from ..data.errors import RecordError
from ..data.images import ImageSource, read_image_size
from ..data.images import open_image as data_open_image
from ..errors import UserError


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
    try:
        return read_image_size(source)
    except RecordError as e:
        raise UserError(f"{where}: {e}") from None


def open_image(source: ImageSource, where: str) -> Image.Image:
    """Fully decoded RGB image; ``UserError`` naming ``where`` if that fails."""
    try:
        return data_open_image(source)
    except RecordError as e:
        raise UserError(f"{where}: {e}") from None
