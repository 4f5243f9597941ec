"""What the array front ends share: chunk layouts, model pins, device options, coding a chunk.

The numcodecs codec (:mod:`.numcodecs_codec`) and the Zarr format 3 codec
(:mod:`.zarr_codec`) both code arrays whose axes are named by a *layout*, pin
the models they may use by hash, and take a runtime device; each goes through
the public API only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import numpy as np

from . import api, zoo
from .errors import CorruptFileError, InvalidImageError, InvalidOptionError
from .fileformat import MODES

LAYOUT = re.compile(r"N*HWC?")
"""Axis orders a chunk may have: any number of N (stack axes, all coded as one chain of frames),
then H rows, W columns, and C channels (1..4) or none (grey): HW, HWC, NHW, NHWC, NNNHW, ..."""

SERIALIZER = "serializer=BitSwapCodec(), compressors=None"
"""How a Zarr format 3 array takes Bit-Swap, which every codec-placement message names."""


def default_layout(shape: Sequence[int]) -> str:
    """The layout of a chunk shape: the last two axes are (y, x) of grey planes and all axes before them
    a stack (HW, NHW, NNNHW for OME-Zarr's (t, c, z, y, x)), except that a last axis of 1 to 4 after
    at least two others is colour channels (HWC, NHWC, ...)."""
    if len(shape) < 2:
        raise InvalidImageError(f"an array of shape {tuple(shape)} is not an image or image stack (2 or more axes)")
    if len(shape) >= 3 and 1 <= shape[-1] <= 4:
        return "N" * (len(shape) - 3) + "HWC"
    return "N" * (len(shape) - 2) + "HW"


def check_layout(layout: str, shape: Sequence[int] | None = None) -> None:
    """Refuse a layout that is unknown or that does not fit ``shape``."""
    if not isinstance(layout, str) or not LAYOUT.fullmatch(layout):
        raise InvalidOptionError(
            f"unknown layout {layout!r}: a layout is HW or HWC after any number of N (stack) axes, "
            "such as HW, HWC, NHW, NHWC or NNNHW"
        )
    if shape is None:
        return
    if len(shape) != len(layout):
        raise InvalidImageError(f"layout {layout!r} needs {len(layout)} axes, got shape {tuple(shape)}")
    if layout.endswith("C") and not 1 <= shape[-1] <= 4:
        raise InvalidImageError(f"layout {layout!r} needs 1 to 4 channels, got shape {tuple(shape)}")


def check_dtype(dtype: np.dtype) -> None:
    """Refuse any dtype but uint8, the one Bit-Swap codes."""
    if np.dtype(dtype) != np.uint8:
        raise InvalidImageError(f"Bit-Swap codes uint8 data only, got dtype {dtype} (a Zarr array needs dtype='uint8')")


def pin_models(model: str | None) -> dict[str, str]:
    """Name -> SHA-256 of the installed models a codec may use: ``model`` (default: the
    colour model) for the image planes and the default grey model (alpha, grey images)."""
    names = dict.fromkeys([model or zoo.DEFAULT_MODELS[3], zoo.DEFAULT_MODELS[1]])
    return {name: zoo.model_hash(name) for name in names}


def check_device(device: object) -> str | None:
    """``device`` as the string a codec keeps: its spelling is checked, not that it exists here
    (a codec may be configured on one machine and code on another)."""
    if device is None:
        return None
    api.resolve_device(device, require=False)
    return str(device)


def _stack_shape(shape: Sequence[int], layout: str) -> tuple[int, ...]:
    """``shape`` with its stack (N) axes merged into one: (N, H, W[, C]), or (H, W[, C]) without N."""
    stacked = len(layout) - len(layout.lstrip("N"))
    return (math.prod(shape[:stacked]), *shape[stacked:]) if stacked else tuple(shape)


def encode_image(
    array: np.ndarray, layout: str, *, model: str | None, method: str, models: Mapping[str, str], device: str | None = None
) -> bytes:
    """Compress a uint8 array laid out as ``layout`` (its stack axes as one chain) on ``device``, refusing
    models other than ``models``."""
    check_layout(layout, array.shape)
    if "N" in layout:
        # one stack axis, and a channel axis: the API would read an (N, H, W) with W <= 4 as (H, W, C)
        channels = () if layout.endswith("C") else (1,)
        array = array.reshape(*_stack_shape(array.shape, layout), *channels)
    return api.compress(array, model=model, method=method, device=device, pins=models)


def decode_image(
    data: bytes, layout: str | None, shape: Sequence[int] | None = None, device: str | None = None
) -> np.ndarray:
    """Decompress ``data`` on ``device`` into ``shape`` (a chunk's shape laid out as ``layout``), else into
    ``layout`` with its stack axes merged into one, else as :func:`bitswap_plugin.decompress` returns it."""
    if layout is None:
        return api.decompress(data, device=device)
    info = api.read_info(data)
    frames, channels = info.frames, MODES[info.mode].channels
    held = (*((frames,) if "N" in layout else ()), info.height, info.width, *((channels,) if "C" in layout else ()))
    if (frames > 1 and "N" not in layout) or (channels > 1 and "C" not in layout) or (
        shape is not None and _stack_shape(shape, layout) != held
    ):
        chunk = f"a {layout!r} chunk" + ("" if shape is None else f" of shape {tuple(shape)}")
        held_text = f"{frames} {info.mode} image(s) of {info.height}x{info.width}"
        raise CorruptFileError(f"the stream holds {held_text}, which {chunk} cannot hold")
    return api.decompress(data, device=device).reshape(held if shape is None else shape)
