"""InternVL dynamic tiling: an image becomes k square tiles of ``image_size`` pixels.

The grid (cols, rows), 1 <= cols * rows <= max_tiles, is the one whose aspect ratio is closest
to the image's; on a tie the larger grid wins when the image area exceeds half the grid's pixel
area. The image is resized (bicubic) to the grid, cut into tiles row by row, and, when there is
more than one tile and ``use_thumbnail`` is set, followed by a thumbnail of the whole image.
Pixels are scaled to [0, 1] and normalised with the ImageNet mean and std.
"""
from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from .errors import RecordError

if TYPE_CHECKING:  # only for annotations: keeps model/ out of the import graph
    from ..model.config import VisionSettings

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def candidate_grids(max_tiles: int, min_tiles: int = 1) -> list[tuple[int, int]]:
    """All (cols, rows) with min_tiles <= cols * rows <= max_tiles, smallest area first."""
    grids = [(c, r) for c in range(1, max_tiles + 1) for r in range(1, max_tiles + 1)
             if min_tiles <= c * r <= max_tiles]
    return sorted(grids, key=lambda g: (g[0] * g[1], g[0]))


def choose_grid(width: int, height: int, image_size: int, max_tiles: int,
                min_tiles: int = 1) -> tuple[int, int]:
    """The (cols, rows) grid for a ``width`` x ``height`` image."""
    aspect, area = width / height, width * height
    best, best_diff = (1, 1), math.inf
    for cols, rows in candidate_grids(max_tiles, min_tiles):
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and area > 0.5 * image_size * image_size * cols * rows:
            best = (cols, rows)
    return best


def count_tiles(width: int, height: int, vision: VisionSettings) -> int:
    """Number of tiles (thumbnail included) ``tile_image`` makes for this image size."""
    cols, rows = choose_grid(width, height, vision.image_size, vision.max_tiles)
    n = cols * rows
    return n + 1 if vision.use_thumbnail and n > 1 else n


def tile_image(image: Image.Image, vision: VisionSettings) -> list[Image.Image]:
    """Cut an RGB image into grid tiles (row-major), then the thumbnail if any."""
    size = vision.image_size
    cols, rows = choose_grid(*image.size, size, vision.max_tiles)
    grid = image.resize((size * cols, size * rows), Image.Resampling.BICUBIC)
    tiles = [grid.crop((c * size, r * size, (c + 1) * size, (r + 1) * size))
             for r in range(rows) for c in range(cols)]
    if vision.use_thumbnail and len(tiles) > 1:
        tiles.append(image.resize((size, size), Image.Resampling.BICUBIC))
    return tiles


def normalize(tiles: list[Image.Image]) -> torch.Tensor:
    """RGB tiles -> (k, 3, S, S) float32, ImageNet-normalised."""
    pixels = np.stack([np.asarray(t, dtype=np.float32) for t in tiles]) / 255.0  # (k, S, S, 3)
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2)  # (k, 3, S, S)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()


ImageSource = str | os.PathLike | bytes  # a file, or an image's encoded bytes (e.g. a TSV's base64 column)


def open_image(source: ImageSource) -> Image.Image:
    """Fully decode an image as RGB; ``RecordError`` names the file if that fails."""
    try:
        with _open(source) as image:
            image.load()
            return image.convert("RGB")
    except RecordError:
        raise
    except Exception as exc:  # PIL raises many kinds on corrupt files
        raise RecordError(f"cannot decode image{_name(source)}: {_one_line(exc)}") from None


def read_image_size(source: ImageSource) -> tuple[int, int]:
    """(width, height) from the header only (cheap); ``RecordError`` if unreadable."""
    try:
        with _open(source) as image:
            return image.size
    except RecordError:
        raise
    except Exception as exc:
        raise RecordError(f"cannot decode image{_name(source)}: {_one_line(exc)}") from None


def _open(source: ImageSource) -> Image.Image:
    if isinstance(source, bytes):
        return Image.open(io.BytesIO(source))
    _check_exists(source)
    return Image.open(source)


def _name(source: ImageSource) -> str:
    return "" if isinstance(source, bytes) else f" {source}"


def load_image(path_or_pil: str | os.PathLike | Image.Image, vision: VisionSettings) -> torch.Tensor:
    """An image file or PIL image -> its tiles, (k, 3, S, S) float32."""
    if isinstance(path_or_pil, Image.Image):
        image = path_or_pil.convert("RGB")
    else:
        image = open_image(path_or_pil)
    return normalize(tile_image(image, vision))


def _check_exists(path) -> None:
    if not Path(path).is_file():
        raise RecordError(f"image not found: {path}")


def _one_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
