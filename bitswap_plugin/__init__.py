"""bitswap-plugin: learned lossless image compression (Bit-Swap) for everyday tools.

>>> import numpy as np, bitswap_plugin as bsw
>>> data = bsw.compress(np.zeros((40, 50, 3), np.uint8))
>>> bsw.decompress(data).shape
(40, 50, 3)
"""

from . import BswImagePlugin  # noqa: F401 - registers the BSW format with Pillow
from .api import MAX_IMAGE_PIXELS, ImageInfo, compress, decompress, read_info
from .errors import (
    BitSwapError,
    CorruptFileError,
    DeviceError,
    ImageTooLargeError,
    InvalidImageError,
    ModelNotFoundError,
    UnsupportedFormatError,
)
from .zoo import available_models, register_model

__version__ = "0.1.0"

__all__ = [
    "compress",
    "decompress",
    "read_info",
    "ImageInfo",
    "MAX_IMAGE_PIXELS",
    "available_models",
    "register_model",
    "BitSwapError",
    "CorruptFileError",
    "DeviceError",
    "ImageTooLargeError",
    "InvalidImageError",
    "ModelNotFoundError",
    "UnsupportedFormatError",
]

_LAZY = {"BitSwap": "numcodecs_codec", "BitSwapCodec": "zarr_codec"}
"""``bitswap_plugin.BitSwap`` (numcodecs) and ``BitSwapCodec`` (Zarr v3), imported on first
use so that numcodecs and zarr stay optional (and out of ``__all__``)."""


def __getattr__(name: str) -> type:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
