"""Pillow images <-> the uint8 arrays and metadata the codec takes, and folders of images; shared
by the CLI, plugins, bench and training."""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from .errors import InvalidImageError
from .fileformat import MAX_METADATA_BYTES, MODE_BY_CHANNELS

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


_BINARY_METADATA = ("icc_profile", "exif", "xmp")
"""Pillow ``info`` entries kept as they are."""
TEXT_PREFIX = "text:"
"""Metadata key prefix of a text chunk (PNG tEXt/iTXt/zTXt)."""
_XMP_TEXT_KEY = "XML:com.adobe.xmp"
"""The PNG text chunk Pillow also reports as ``info["xmp"]`` (kept once, as ``xmp``)."""


def _as_bytes(value: object) -> bytes | None:
    if isinstance(value, Image.Exif):
        value = value.tobytes()
    if isinstance(value, str):
        value = value.encode()
    return bytes(value) if isinstance(value, (bytes, bytearray)) and value else None


def _dpi(value: object) -> tuple[float, float] | None:
    """A resolution as two finite positive numbers (TIFF gives IFDRational), else None."""
    if not isinstance(value, tuple) or len(value) != 2 or not all(isinstance(v, numbers.Real) for v in value):
        return None
    x, y = float(value[0]), float(value[1])
    return (x, y) if all(math.isfinite(v) and 0 < v < 1e9 for v in (x, y)) else None


def _text_chunks(image: Image.Image) -> dict[str, str]:
    """The text chunks of a PNG, or of a ``.bsw`` image that stored them."""
    text = getattr(image, "text", None)
    return {k: str(v) for k, v in text.items() if k != _XMP_TEXT_KEY} if isinstance(text, dict) else {}


def metadata_of(image: Image.Image, overrides: Mapping[str, object] | None = None) -> dict[str, bytes]:
    """What a ``.bsw`` file keeps of ``image``: its ICC profile, EXIF, XMP, DPI and text chunks, each
    replaced by ``overrides`` (a save call's options) where given there. Beyond the format's 1 MiB,
    text chunks go first, then the largest entries, each with a warning: the pixels matter more."""
    info = {**image.info, **(overrides or {})}
    metadata = {key: value for key in _BINARY_METADATA if (value := _as_bytes(info.get(key))) is not None}
    if (dpi := _dpi(info.get("dpi"))) is not None:
        metadata["dpi"] = f"{dpi[0]!r},{dpi[1]!r}".encode()
    for key, value in _text_chunks(image).items():
        metadata[TEXT_PREFIX + key] = value.encode("utf-8", "replace")
    size = sum(len(key.encode("utf-8", "replace")) + len(value) for key, value in metadata.items())
    for key in sorted(metadata, key=lambda k: (not k.startswith(TEXT_PREFIX), -len(metadata[k]))):
        if size <= MAX_METADATA_BYTES:
            break
        size -= len(key.encode("utf-8", "replace")) + len(metadata[key])
        warnings.warn(f"metadata {key!r} ({len(metadata.pop(key))} bytes) dropped: .bsw keeps at most {MAX_METADATA_BYTES} bytes", stacklevel=2)
    return metadata


def info_of(metadata: Mapping[str, bytes]) -> dict[str, object]:
    """Pillow ``info`` entries for stored ``metadata``: bytes for ICC, EXIF and XMP, a float pair
    for DPI (when it is two positive numbers), a str for each text chunk (never replacing those)."""
    reserved = (*_BINARY_METADATA, "dpi")
    info: dict[str, object] = {key: value for key, value in text_of(metadata).items() if key not in reserved}
    info.update({key: metadata[key] for key in _BINARY_METADATA if key in metadata})
    try:
        dpi = _dpi(tuple(float(v) for v in metadata["dpi"].decode().split(",")))
    except (KeyError, ValueError, UnicodeDecodeError):
        dpi = None
    if dpi is not None:
        info["dpi"] = dpi
    return info


def text_of(metadata: Mapping[str, bytes]) -> dict[str, str]:
    """The text chunks among stored ``metadata``."""
    return {key[len(TEXT_PREFIX) :]: value.decode("utf-8", "replace") for key, value in metadata.items() if key.startswith(TEXT_PREFIX)}


def save_options(metadata: Mapping[str, bytes], fmt: str) -> dict[str, object]:
    """Pillow ``save`` options that write ``metadata`` into a ``fmt`` file (what the format holds)."""
    info = info_of(metadata)
    options = {key: info[key] for key in ("icc_profile", "exif", "xmp", "dpi") if key in info}
    if fmt == "PNG":
        chunks = PngImagePlugin.PngInfo()
        for key, value in text_of(metadata).items():
            chunks.add_itxt(key, value)
        options["pnginfo"] = chunks
    return options
