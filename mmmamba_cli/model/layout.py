"""Hybrid layouts: which global layers stay softmax attention."""
from __future__ import annotations

from ..errors import UserError
from .config import ATTENTION, MAMBA


class LayoutError(UserError):
    """A bad layer list or block size. ``field`` names the input ("attn_layers" or "every") so that a
    front end can name its own option; the message itself names none."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def parse_layer_list(spec: str | list[int] | tuple[int, ...] | None, num_layers: int) -> list[int]:
    """'0,4,8' or [0, 4, 8] -> validated sorted indices in [0, num_layers). '' / None -> []."""
    if spec is None:
        return []
    if isinstance(spec, str):
        parts = [p.strip() for p in spec.replace(" ", ",").split(",") if p.strip()]
        if spec.strip() and not parts:
            raise LayoutError("attn_layers", f"{spec!r}: no layer index given")
        try:
            idx = [int(p) for p in parts]
        except ValueError:
            raise LayoutError("attn_layers", f"{spec!r}: layer indices must be integers") from None
    else:
        idx = [int(i) for i in spec]
    dupes = sorted({i for i in idx if idx.count(i) > 1})
    if dupes:
        raise LayoutError("attn_layers", f"duplicate layer index {dupes}")
    bad = [i for i in idx if not 0 <= i < num_layers]
    if bad:
        raise LayoutError("attn_layers", f"layer index {bad} out of range 0..{num_layers - 1}")
    return sorted(idx)


def every(n: int, offset: int, num_layers: int) -> list[int]:
    """First layer of every block of n (shifted by offset): the paper's placement for n=4."""
    if n < 1 or not 0 <= offset < n:
        raise LayoutError("every", f"block size {n}, offset {offset}: need a block size >= 1 and 0 <= offset < it")
    return list(range(offset, num_layers, n))


def layer_types_for(attn_layers: list[int], num_layers: int) -> list[str]:
    keep = set(attn_layers)
    return [ATTENTION if i in keep else MAMBA for i in range(num_layers)]
