"""``BitSwap``: a numcodecs codec (``{"id": "bitswap"}``) for uint8 images and image stacks.

Registered through the ``numcodecs.codecs`` entry point, so
``numcodecs.get_codec({"id": "bitswap", ...})`` and Zarr format 2 arrays find
it without importing this package. Layouts, model pins and the coding of a
chunk are shared with the Zarr v3 codec (:mod:`.adapters`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from numcodecs.abc import Codec
from numcodecs.compat import ensure_bytes, ensure_contiguous_ndarray, ndarray_copy

from .adapters import (
    SERIALIZER, check_device, check_dtype, check_layout, decode_image, default_layout, encode_image, pin_models,
)
from .errors import InvalidImageError, InvalidOptionError
from .fileformat import AUTO, check_method


class BitSwap(Codec):
    """Lossless Bit-Swap compression of uint8 images, or stacks of images coded as one chain.

    ``model``: the model for the colour (or grey) planes, default by channel count;
    ``method``: ``"auto"`` (the smallest of Bit-Swap and the classical methods, see
    :func:`~bitswap_plugin.compress`), or one forced (``"bitswap"``, ``"webp"``, ...); ``layout``: the axes, such as HW, HWC,
    NHWC or NNNHW (:data:`~bitswap_plugin.adapters.LAYOUT`; every N axis is one
    stack), by default inferred from each array's shape (:func:`default_layout`);
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
        method: str = AUTO,
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
            check_dtype(buf.dtype)
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
        """Compress an image or a stack of images laid out as ``layout`` (any number of stack axes
        before (H, W) or (H, W, C)), or flat bytes of ``shape``."""
        array = self._image(buf)
        layout = self.layout or default_layout(array.shape)
        return encode_image(array, layout, model=self.model, method=self.method, models=self.models, device=self.device)

    def decode(self, buf: object, out: object | None = None) -> np.ndarray:
        """Decompress into ``out``, or a new array of ``shape``, else shaped as ``layout`` with its stack
        axes merged into one, else as :func:`bitswap_plugin.decompress` returns it."""
        return ndarray_copy(decode_image(ensure_bytes(buf), self.layout, self.shape, self.device), out)

    def __getitem__(self, index: object) -> None:
        """Refuse indexing and iteration: Zarr format 3 iterates its ``compressors=``, where this codec does not go."""
        raise InvalidOptionError(
            "BitSwap is a numcodecs codec, a Zarr format 2 compressor (compressors=BitSwap(), zarr_format=2); "
            f"a Zarr format 3 array takes Bit-Swap as its serializer: zarr.create_array(..., {SERIALIZER})"
        )
