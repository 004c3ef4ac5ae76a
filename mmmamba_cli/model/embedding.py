"""Input embedding: text tables plus HoVLE's vision stem (patch conv, pixel shuffle, projection).

The whole ``input_ids`` sequence is embedded as text, then rows holding the image-context
token are overwritten, in order, by the flattened tile tokens (SPEC section 1).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig, VisionSettings


def pixel_shuffle(x: torch.Tensor, ratio: float) -> torch.Tensor:
    """Space-to-depth on a square token grid: (n, l, c) -> (n, l*r^2, c/r^2), HoVLE's order."""
    n, l, c = x.shape
    side = int(l ** 0.5)
    x = x.reshape(n, side, int(side * ratio), int(c / ratio))          # (n, w, h*r, c/r)
    x = x.permute(0, 2, 1, 3)                                           # (n, h*r, w, c/r)
    x = x.reshape(n, int(side * ratio), int(side * ratio), int(c / ratio ** 2))
    x = x.permute(0, 2, 1, 3)                                           # (n, w*r, h*r, c/r^2)
    return x.reshape(n, int(l * ratio ** 2), int(c / ratio ** 2))


class VisionStem(nn.Module):
    def __init__(self, hidden: int, v: VisionSettings):
        super().__init__()
        self.v = v
        grid = v.image_size // v.patch_size
        self.patch_embedding = nn.Conv2d(v.num_channels, hidden, v.patch_size, stride=v.patch_size)
        # a leading class slot is kept for checkpoint compatibility; it is never used
        self.position_embedding = nn.Parameter(torch.randn(1, grid * grid + 1, hidden) * 0.02)
        r2 = int(round(1 / v.downsample_ratio ** 2))
        self.proj = nn.Sequential(nn.Linear(hidden * r2, hidden), nn.GELU(), nn.Linear(hidden, hidden))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(n, 3, S, S) -> (n, tokens_per_tile, hidden)."""
        x = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype))  # (n, c, gh, gw)
        n, c, gh, gw = x.shape
        x = x.flatten(2).transpose(1, 2)  # (n, gh*gw, c)
        return self.proj(pixel_shuffle(x + self._pos(gh, gw).to(x.dtype), self.v.downsample_ratio))

    def _pos(self, gh: int, gw: int) -> torch.Tensor:
        pos = self.position_embedding[:, 1:]  # (1, g*g, c), class slot dropped
        g = int(pos.shape[1] ** 0.5)
        if (gh, gw) == (g, g):
            return pos
        grid = pos.reshape(1, g, g, -1).permute(0, 3, 1, 2).float()  # (1, c, g, g)
        grid = F.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False)
        return grid.reshape(1, -1, gh * gw).permute(0, 2, 1)


class Embedder(nn.Module):
    """Text ids below ``vocab_size`` (HoVLE: ``llm_vocab_size``) read ``embed_tokens``; ids at or above
    it read the special-token table at row ``id - vocab_size`` (HoVLE's ``special_text_embeddings``),
    or row 0 of the text table when there is none, as HoVLE's code does."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.special = (nn.Embedding(config.num_special_embeddings, config.hidden_size)
                        if config.num_special_embeddings else None)
        self.vision = VisionStem(config.hidden_size, config.vision) if config.vision else None

    def forward(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None) -> torch.Tensor:
        V = self.config.vocab_size
        is_special = input_ids >= V
        h = self.embed_tokens(input_ids.masked_fill(is_special, 0))  # (b, l, c)
        if self.special is not None and bool(is_special.any()):
            sp = self.special((input_ids - V).clamp(min=0, max=self.special.num_embeddings - 1))
            h = torch.where(is_special[..., None], sp, h)
        if pixel_values is not None and self.vision is not None and pixel_values.numel():
            img = self.vision(pixel_values).flatten(0, 1)  # (n_tiles * tokens_per_tile, c)
            where = input_ids == self.config.img_context_token_id
            n = int(where.sum())
            if n != img.shape[0]:
                raise ValueError(f"{n} image-context tokens in input_ids but {img.shape[0]} image tokens "
                                 f"from {pixel_values.shape[0]} tile(s)")
            h = h.masked_scatter(where[..., None], img.to(h.dtype))
        return h
