"""``BitSwap``: a numcodecs codec (``{"id": "bitswap"}``) for uint8 images and image stacks.

Registered through the ``numcodecs.codecs`` entry point, so
``numcodecs.get_codec({"id": "bitswap", ...})`` and Zarr format 2 arrays find
it without importing this package. The helpers below (layouts, model pins,
:func:`encode_image`, :func:`decode_image`) are shared with the Zarr v3 codec.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from numcodecs.abc import Codec
from numcodecs.compat import ensure_bytes, ensure_contiguous_ndarray, ndarray_copy

from . import api, zoo
from .errors import CorruptFileError, InvalidImageError, ModelNotFoundError

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
        raise InvalidImageError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if shape is None:
        return
    if len(shape) != len(layout):
        raise InvalidImageError(f"layout {layout!r} needs {len(layout)} axes, got shape {tuple(shape)}")
    if "C" in layout and not 1 <= shape[layout.index("C")] <= 4:
        raise InvalidImageError(f"layout {layout!r} needs 1 to 4 channels, got shape {tuple(shape)}")


def check_method(method: str) -> None:
    """Refuse an unknown coding method."""
    if method not in api.METHODS:
        raise InvalidImageError(f"method must be one of {api.METHODS}, got {method!r}")


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
    data = api.compress(array if "C" in layout else array[..., None], model=model, method=method, device=device)
    for name, digest in api.read_info(data).models:
        if models.get(name) != digest:
            pinned = f"pins {models[name][:16]}…" if name in models else "does not pin it"
            raise ModelNotFoundError(f"the installed model {name!r} has hash {digest[:16]}…, but the codec {pinned}")
    return data


def decode_image(data: bytes, layout: str | None, device: str | None = None) -> np.ndarray:
    """Decompress ``data`` on ``device``, shaped as ``layout`` (or as :func:`bitswap_plugin.decompress` returns it)."""
    if layout is None:
        return api.decompress(data, device=device)
    info = api.read_info(data)
    axes = {"N": info.frames, "H": info.height, "W": info.width, "C": len(info.mode)}
    if any(axes[axis] != 1 for axis in "NC" if axis not in layout):
        raise CorruptFileError(f"the stream holds {info.frames} {info.mode} image(s), which a {layout!r} chunk cannot hold")
    return api.decompress(data, device=device).reshape([axes[axis] for axis in layout])


class BitSwap(Codec):
    """Lossless Bit-Swap compression of uint8 images, or stacks of images coded as one chain.

    ``model``: the model for the colour (or grey) planes, default by channel count;
    ``method``: ``"bitswap"`` or ``"bbans"``; ``layout``: one of :data:`LAYOUTS`,
    by default inferred from each array's shape (:func:`default_layout`);
    ``shape``: the image shape, needed to encode flat buffers; ``models``: name ->
    SHA-256 of the models it may use, pinned from the installed models when omitted
    (encoding with any other model fails).

    ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"auto"``; default
    ``$BITSWAP_DEVICE``, else the CPU) is where this codec object codes. It is a
    runtime option, left out of :meth:`get_config` and of equality: it changes
    nothing in the bytes, and a stored configuration (Zarr metadata) must open on
    any machine, GPU or not. Only its spelling is checked here; a missing CUDA
    device is a :class:`~bitswap_plugin.errors.DeviceError` when coding.
    """

    codec_id = "bitswap"

    def __init__(
        self,
        model: str | None = None,
        method: str = "bitswap",
        layout: str | None = None,
        shape: Sequence[int] | None = None,
        models: Mapping[str, str] | None = None,
        device: str | None = None,
    ) -> None:
        check_method(method)
        if shape is not None:
            shape = tuple(int(size) for size in shape)
            if not shape or min(shape) < 1:
                raise InvalidImageError(f"shape must be positive sizes, got {shape}")
            layout = layout or default_layout(shape)
        if layout is not None:
            check_layout(layout, shape)
        self.model = model
        self.method = method
        self.layout = layout
        self.shape = shape
        self.models = dict(models) if models is not None else pin_models(model)
        self.device = check_device(device)

    def get_config(self) -> dict:
        return {
            "id": self.codec_id,
            "model": self.model,
            "method": self.method,
            "layout": self.layout,
            "shape": None if self.shape is None else list(self.shape),
            "models": dict(self.models),
        }

    def _image(self, buf: object) -> np.ndarray:
        """``buf`` as an image array: a uint8 ndarray, or any other buffer read as raw bytes."""
        if isinstance(buf, np.ndarray):
            if buf.dtype != np.uint8:
                raise InvalidImageError(f"BitSwap codes uint8 data, got dtype {buf.dtype}")
            if buf.ndim > 1 and buf.flags.f_contiguous and not buf.flags.c_contiguous:
                raise InvalidImageError("BitSwap codes C-ordered arrays, got a Fortran-ordered one (zarr: order='C')")
            array = buf
        else:
            array = ensure_contiguous_ndarray(buf).reshape(-1).view(np.uint8)
        if self.shape is None:
            if array.ndim < 2:
                raise InvalidImageError("flat data needs the image shape in the codec config (BitSwap(shape=...))")
            return array
        if array.shape != self.shape and (array.ndim != 1 or array.size != math.prod(self.shape)):
            raise InvalidImageError(f"the codec is configured for shape {self.shape}, got data of shape {array.shape}")
        return array.reshape(self.shape)

    def encode(self, buf: object) -> bytes:
        """Compress an image: (H, W), (H, W, C), (N, H, W, C), (N, H, W) per ``layout``, or flat bytes of ``shape``."""
        array = self._image(buf)
        layout = self.layout or default_layout(array.shape)
        return encode_image(array, layout, model=self.model, method=self.method, models=self.models, device=self.device)

    def decode(self, buf: object, out: object | None = None) -> np.ndarray:
        """Decompress into a new array (shaped like the encoded one) or into ``out``."""
        image = decode_image(ensure_bytes(buf), self.layout, self.device)
        if self.shape is not None and image.shape != self.shape:
            raise CorruptFileError(f"the stream holds an array of shape {image.shape}, the codec expects {self.shape}")
        return ndarray_copy(image, out)
