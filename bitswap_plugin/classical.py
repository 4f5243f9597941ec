"""The classical methods a stream may use instead of Bit-Swap: raw pixels, PNG and WebP lossless.

They are what makes ``.bsw`` safe on any content: the encoder always has one of them
ready, and keeps it when the learned coder would be larger (screenshots, text, palettes,
flat areas; see :func:`.api.compress`). Every frame is a complete file of its format
(``varint`` length, then the file), written and read by Pillow, so any PNG or WebP
reader can inspect it. The pixels are an (N, H, W, C) uint8 stack of 1 to 4 channels.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, features

from .container import read_varint, varint
from .errors import CorruptFileError, ImageTooLargeError, TruncatedFileError, UnsupportedFormatError
from .fileformat import MODE_BY_CHANNELS

WEBP_MAX_SIDE = 16383
"""The largest width or height a WebP file can have."""
MAX_FRAME_PIXELS = 1 << 26
"""Most pixels per frame coded as PNG or WebP (below Pillow's decompression-bomb threshold,
so a reader with Pillow's defaults opens every frame this writer writes)."""
_PILLOW_FORMAT = {"png": "PNG", "webp": "WEBP"}
_SAVE_OPTIONS = {
    # optimize costs about 10x compress_level 6 for ~1 % on photos
    "png": {"compress_level": 6},
    # exact: keep the colour of fully transparent pixels (lossless means every byte)
    "webp": {"lossless": True, "exact": True},
}
WEBP_EFFORT = {"fast": {"method": 4, "quality": 50}, "best": {"method": 6, "quality": 100}}
"""libwebp settings. ``fast`` takes 0.24 s on a Kodak photo (one core) and is within 3 % of
``best`` on photos; ``best`` is up to 40x slower and, on graphics, up to 30 % smaller
(``benchmarks/results/graphics.json``)."""


def available(method: str, height: int, width: int) -> bool:
    """Whether this install can code an ``height x width`` frame with the classical ``method``."""
    if method == "raw":
        return True
    if height * width > MAX_FRAME_PIXELS:
        return False
    return method == "png" or (features.check("webp") and max(height, width) <= WEBP_MAX_SIDE)


def _to_pil(frame: np.ndarray, method: str) -> Image.Image:
    image = Image.fromarray(frame[..., 0] if frame.shape[2] == 1 else frame, MODE_BY_CHANNELS[frame.shape[2]].name)
    if method == "webp" and image.mode in ("L", "LA"):  # WebP stores RGB(A); the decoder keeps channel 0
        image = image.convert("RGBA" if image.mode == "LA" else "RGB")
    return image


def encode(stack: np.ndarray, method: str, effort: str = "fast") -> bytes:
    """The payload coding ``stack`` (N, H, W, C) with a classical ``method`` (see :func:`available`);
    ``effort`` picks WebP's settings (:data:`WEBP_EFFORT`)."""
    if method == "raw":
        return stack.tobytes()
    options = _SAVE_OPTIONS[method] | (WEBP_EFFORT[effort] if method == "webp" else {})
    out = bytearray()
    for frame in stack:
        buffer = io.BytesIO()
        _to_pil(frame, method).save(buffer, _PILLOW_FORMAT[method], **options)
        out += varint(buffer.tell()) + buffer.getvalue()
    return bytes(out)


def _open_frame(data: bytes, method: str, height: int, width: int) -> Image.Image:
    """A frame's PNG or WebP file opened (header read, pixels not yet) and checked to be ``width x height``."""
    if method == "webp" and not features.check("webp"):
        raise UnsupportedFormatError("this .bsw file is coded with WebP, which this Pillow was built without")
    try:
        image = Image.open(io.BytesIO(data), formats=[_PILLOW_FORMAT[method]])
    except Image.DecompressionBombError as exc:  # Image.MAX_IMAGE_PIXELS, lowered by the caller
        raise ImageTooLargeError(f"a {method.upper()} frame exceeds Pillow's pixel limit: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise CorruptFileError(f"corrupt .bsw file: a {method.upper()} frame does not decode ({exc})") from None
    if image.size != (width, height):
        raise CorruptFileError(f"corrupt .bsw file: a {method.upper()} frame is {image.size[0]}x{image.size[1]}, not {width}x{height}")
    return image


_WEBP_MODES = {"RGB": "RGB", "RGBA": "RGBA", "L": "RGB", "LA": "RGBA"}
"""The mode a WebP frame of each coded mode decodes to (grey is stored as RGB)."""


def _pixels(image: Image.Image, method: str, mode: str) -> np.ndarray:
    """An opened frame's pixels as (H, W, C) uint8 in the coded ``mode``."""
    expected = _WEBP_MODES[mode] if method == "webp" else mode
    if method == "webp" and expected == "RGBA" and image.mode == "RGB":
        image = image.convert("RGBA")  # libwebp leaves out an alpha that is 255 everywhere
    if image.mode != expected:
        raise CorruptFileError(f"corrupt .bsw file: a {method.upper()} frame has mode {image.mode}, not {expected}")
    try:
        pixels = np.asarray(image)
    except (OSError, SyntaxError, ValueError) as exc:
        raise CorruptFileError(f"corrupt .bsw file: a {method.upper()} frame does not decode ({exc})") from None
    pixels = pixels.reshape(image.height, image.width, -1)
    return pixels[..., [0, 3][: len(mode)]] if expected != mode else pixels


def decode(payload: bytes, method: str, shape: tuple[int, int, int, int]) -> np.ndarray:
    """The (N, H, W, C) stack a classical ``method``'s payload codes (``shape`` from the header)."""
    frames, height, width, channels = shape
    if method == "raw":
        if len(payload) != frames * height * width * channels:
            raise CorruptFileError(f"corrupt .bsw file: {len(payload)} bytes of raw pixels, the header needs {frames * height * width * channels}")
        return np.frombuffer(payload, np.uint8).reshape(shape).copy()
    images, offset = [], 0
    for frame in range(frames):  # every frame's size checked before any pixels are allocated
        try:
            length, offset = read_varint(payload, offset)
        except TruncatedFileError:
            raise CorruptFileError(f"corrupt .bsw file: frame {frame} runs past the end of the payload") from None
        if offset + length > len(payload):
            raise CorruptFileError(f"corrupt .bsw file: frame {frame} runs past the end of the payload")
        images.append(_open_frame(payload[offset : offset + length], method, height, width))
        offset += length
    if offset != len(payload):
        raise CorruptFileError("corrupt .bsw file: unexpected bytes after the last frame")
    stack = np.empty(shape, np.uint8)
    for frame, image in enumerate(images):
        stack[frame] = _pixels(image, method, MODE_BY_CHANNELS[channels].name)
    return stack
