"""Pillow images <-> the uint8 arrays the codec takes, and folders of images; shared by the CLI, plugins, bench and training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .errors import InvalidImageError
from .fileformat import MODE_BY_CHANNELS

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".ppm", ".pgm")
"""File name endings read as images from a folder (training data, benchmark sets)."""


def images_in(folder: str | Path) -> list[Path]:
    """The image files directly in ``folder``, sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def to_array(image: Image.Image) -> np.ndarray:
    """Pixels of an 8-bit image as (H, W) or (H, W, C) uint8, converting ``1``/``P`` losslessly.

    ``1`` becomes L (0/255); ``P`` becomes RGB, or RGBA when the palette has
    transparency. Modes that hold more than 8 bits per channel (I, I;16, F) or
    that would need a lossy colour conversion (CMYK, YCbCr) are refused.
    """
    mode = image.mode
    if mode == "1":
        image = image.convert("L")
    elif mode in ("P", "PA"):
        image = image.convert("RGBA" if mode == "PA" or "transparency" in image.info else "RGB")
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        raise InvalidImageError(f"cannot store a {mode} image losslessly as .bsw (supported: L, LA, RGB, RGBA, 1, P)")
    return np.asarray(image)


def from_array(array: np.ndarray) -> Image.Image:
    """A Pillow image (mode L, LA, RGB or RGBA) from a decoded array."""
    return Image.fromarray(array, MODE_BY_CHANNELS[1 if array.ndim == 2 else array.shape[2]].name)
