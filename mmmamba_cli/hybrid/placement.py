"""Which global layers stay softmax attention: an explicit list, every n-th layer, or K by rule.

Rules for ``--count K`` over N layers, with block j = layers [floor(j N / K), floor((j+1) N / K)):

- ``first-of-block``: the first layer of every block (the paper's choice: N=32, K=8 -> 0,4,...,28);
- ``last-of-block``: the last layer of every block (N=32, K=8 -> 3,7,...,31);
- ``top``: the last K layers, nearest the output;
- ``bottom``: the first K layers, nearest the input;
- ``auto``: measured, see :mod:`mmmamba_cli.hybrid.sensitivity` (not resolved here).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import UserError
from ..model.layout import every as every_nth
from ..model.layout import parse_layer_list

AUTO = "auto"


def _blocks(k: int, n: int) -> list[range]:
    return [range(j * n // k, (j + 1) * n // k) for j in range(k)]


RULES: dict[str, Callable[[int, int], list[int]]] = {
    "first-of-block": lambda k, n: [b[0] for b in _blocks(k, n)],
    "last-of-block": lambda k, n: [b[-1] for b in _blocks(k, n)],
    "top": lambda k, n: list(range(n - k, n)),
    "bottom": lambda k, n: list(range(k)),
}
PLACEMENTS = (*RULES, AUTO)


@dataclass
class LayoutRequest:
    """What the user asked for: exactly one of ``attn_layers``, ``every`` or ``count``."""

    attn_layers: str | list[int] | None = None  # "0,4,8" or [0, 4, 8]
    every: int | None = None  # first layer of every block of ``every`` ...
    offset: int | None = None  # ... shifted by ``offset`` (default 0)
    count: int | None = None  # K kept layers, placed by ``placement``
    placement: str | None = None  # one of PLACEMENTS (default first-of-block)

    @property
    def is_auto(self) -> bool:
        return self.count is not None and self.placement == AUTO

    def describe(self) -> str:
        if self.attn_layers is not None:
            return f"attn-layers {self.attn_layers}"
        if self.every is not None:
            return f"every {self.every} offset {self.offset or 0}"
        return f"count {self.count} {self.placement or 'first-of-block'}"


def check_request(req: LayoutRequest) -> list[str]:
    """Conflicting or incomplete option combinations, as messages (empty: fine)."""
    given = [name for name, v in (("--attn-layers", req.attn_layers), ("--every", req.every),
                                  ("--count", req.count)) if v is not None]
    problems = []
    if len(given) != 1:
        problems.append(f"give exactly one of --attn-layers, --every, --count (got {', '.join(given) or 'none'})")
    if req.offset is not None and req.every is None:
        problems.append("--offset needs --every")
    if req.placement is not None and req.count is None:
        problems.append("--placement needs --count")
    if req.placement is not None and req.placement not in PLACEMENTS:
        problems.append(f"--placement {req.placement!r}: choose one of {', '.join(PLACEMENTS)}")
    return problems


def resolve_layers(req: LayoutRequest, num_layers: int) -> list[int] | None:
    """Sorted kept-layer indices for a rule-based request; None for ``auto`` (to be measured).

    Raises ``UserError`` (one line) for conflicting options, an empty or oversized set, duplicate
    or out-of-range indices.
    """
    problems = check_request(req)
    if problems:
        raise UserError("; ".join(problems))
    if req.attn_layers is not None:
        return _explicit(req.attn_layers, num_layers)
    if req.every is not None:
        keep = every_nth(req.every, req.offset or 0, num_layers)
        if not keep:
            raise UserError(f"--every {req.every} --offset {req.offset or 0} keeps no layer of {num_layers}")
        return keep
    check_count(req.count, num_layers)
    if req.is_auto:
        return None
    return RULES[req.placement or "first-of-block"](req.count, num_layers)


def check_count(k: int, num_layers: int) -> None:
    if not 1 <= k <= num_layers:
        raise UserError(f"--count {k}: need 1 <= K <= {num_layers} (the model's layer count)")


def _explicit(spec: str | list[int], num_layers: int) -> list[int]:
    parts = [p for p in spec.replace(" ", ",").split(",") if p.strip()] if isinstance(spec, str) else list(spec)
    if not parts:
        raise UserError("--attn-layers is empty: give at least one layer index (e.g. 0,4,8)")
    if len(parts) > num_layers:
        raise UserError(f"--attn-layers lists {len(parts)} layers but the model has only {num_layers}")
    return parse_layer_list(spec, num_layers)
