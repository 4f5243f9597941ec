"""Large test images for the benchmarks, made of real photos (never noise)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

KODAK = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "kodak"
"""The 24 Kodak images: benchmark data only, never used for training."""
TILE = 512


def mosaic(paths: list[Path], height: int, width: int, tile: int = TILE) -> np.ndarray:
    """A ``height x width`` RGB photo: ``tile``-sized centre crops of ``paths`` (each at least
    ``tile`` on both sides) in turn, row by row."""
    rows, cols = -(-height // tile), -(-width // tile)
    crops = []
    for path in paths[: rows * cols]:
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"))
        top, left = (rgb.shape[0] - tile) // 2, (rgb.shape[1] - tile) // 2
        crops.append(rgb[top : top + tile, left : left + tile])
    lines = [np.concatenate([crops[(r * cols + c) % len(crops)] for c in range(cols)], axis=1) for r in range(rows)]
    return np.ascontiguousarray(np.concatenate(lines)[:height, :width])
