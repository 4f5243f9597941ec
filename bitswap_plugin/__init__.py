"""bitswap-plugin: learned lossless image compression (Bit-Swap) for everyday tools.

>>> import numpy as np, bitswap_plugin as bsw
>>> data = bsw.compress(np.zeros((40, 50, 3), np.uint8))
>>> bsw.decompress(data).shape
(40, 50, 3)
"""

from .api import MAX_IMAGE_PIXELS, ImageInfo, compress, decompress, read_info
from .errors import (
    BitSwapError,
    CorruptFileError,
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
    "ImageTooLargeError",
    "InvalidImageError",
    "ModelNotFoundError",
    "UnsupportedFormatError",
]
