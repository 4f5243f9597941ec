"""What the array front ends share: chunk layouts, model pins, device options, coding a chunk.

The numcodecs codec (:mod:`.numcodecs_codec`) and the Zarr format 3 codec
(:mod:`.zarr_codec`) both code arrays whose axes are named by a *layout*, pin
the models they may use by hash, and take a runtime device; each goes through
the public API only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from . import api, zoo
from .errors import CorruptFileError, InvalidImageError, InvalidOptionError
from .fileformat import MODES

LAYOUTS = ("HW", "HWC", "NHW", "NHWC")
"""Axis orders a chunk may have: N frames (one chain), H rows, W columns, C channels (1..4)."""


def default_layout(shape: Sequence[int]) -> str:
    """The layout of an array shape: HW, HWC (last axis 1..4), NHW (last axis over 4) or NHWC."""
    if len(shape) == 3:
        return "HWC" if 1 <= shape[2] <= 4 else "NHW"
    layout = {2: "HW", 4: "NHWC"}.get(len(shape))
    if layout is None:
        raise InvalidImageError(f"an array of shape {tuple(shape)} is not an image or image stack (2 to 4 axes)")
    return layout


def check_layout(layout: str, shape: Sequence[int] | None = None) -> None:
    """Refuse a layout that is unknown or that does not fit ``shape``."""
    if layout not in LAYOUTS:
        raise InvalidOptionError(f"unknown layout {layout!r}: choose one of {', '.join(LAYOUTS)}")
    if shape is None:
        return
    if len(shape) != len(layout):
        raise InvalidImageError(f"layout {layout!r} needs {len(layout)} axes, got shape {tuple(shape)}")
    if "C" in layout and not 1 <= shape[layout.index("C")] <= 4:
        raise InvalidImageError(f"layout {layout!r} needs 1 to 4 channels, got shape {tuple(shape)}")


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


def encode_image(
    array: np.ndarray, layout: str, *, model: str | None, method: str, models: Mapping[str, str], device: str | None = None
) -> bytes:
    """Compress a uint8 array laid out as ``layout`` (one chain) on ``device``, refusing models other than ``models``."""
    check_layout(layout, array.shape)
    # an NHW stack gets its channel axis: the API would read an (N, H, W) with W <= 4 as (H, W, C)
    array = array[..., None] if layout == "NHW" else array
    return api.compress(array, model=model, method=method, device=device, pins=models)


def decode_image(data: bytes, layout: str | None, device: str | None = None) -> np.ndarray:
    """Decompress ``data`` on ``device``, shaped as ``layout`` (or as :func:`bitswap_plugin.decompress` returns it)."""
    if layout is None:
        return api.decompress(data, device=device)
    info = api.read_info(data)
    axes = {"N": info.frames, "H": info.height, "W": info.width, "C": MODES[info.mode].channels}
    if any(axes[axis] != 1 for axis in "NC" if axis not in layout):
        raise CorruptFileError(f"the stream holds {info.frames} {info.mode} image(s), which a {layout!r} chunk cannot hold")
    return api.decompress(data, device=device).reshape([axes[axis] for axis in layout])
