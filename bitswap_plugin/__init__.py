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
    InvalidOptionError,
    ModelNotFoundError,
    TruncatedFileError,
    UnsupportedFormatError,
)

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
    "InvalidOptionError",
    "ModelNotFoundError",
    "TruncatedFileError",
    "UnsupportedFormatError",
]

_LAZY = {
    "BitSwap": "numcodecs_codec",
    "BitSwapCodec": "zarr_codec",
    "available_models": "zoo",
    "register_model": "zoo",
}
"""Imported on first use: ``BitSwap`` (numcodecs) and ``BitSwapCodec`` (Zarr v3), so that numcodecs
and zarr stay optional (and out of ``__all__``), and the model registry, so that importing the
package (which registers the Pillow format) does not load torch."""


def __getattr__(name: str) -> object:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
