"""Which positions of a chat sequence are scored when comparing next-token distributions."""
from __future__ import annotations

import torch


def scored_targets(ids: torch.Tensor, mask: torch.Tensor, image_token: int | None) -> torch.Tensor:
    """(b, L) bool: real tokens after the last image token and the one closing the image block."""
    pos = torch.arange(ids.shape[1], device=ids.device)[None]  # (1, L)
    is_img = ids == image_token if image_token is not None else torch.zeros_like(mask, dtype=torch.bool)
    last_img = torch.where(is_img, pos, torch.full_like(pos, -2)).amax(1, keepdim=True)  # (b, 1); -2: none
    return mask.bool() & (pos > last_img + 1) & (pos >= 1)
