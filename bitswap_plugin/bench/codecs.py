"""The codecs a benchmark compares: each one encodes a uint8 image to bytes and back.

PNG and WebP come from Pillow; the other image codecs from imagecodecs (an
optional dependency: a codec whose library is missing is left out, never
faked); gzip, bzip2 and LZMA code
the raw pixel bytes, as in the Bit-Swap paper. Every codec is lossless, and
the benchmark checks that.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .. import api, zoo
from ..fileformat import AUTO, METHODS, MODE_BY_CHANNELS
from ..images import from_array

Encoder = Callable[[np.ndarray], bytes]
Decoder = Callable[[bytes, tuple[int, ...]], np.ndarray]


@dataclass(frozen=True)
class Codec:
    """A lossless codec under a short, file-name-safe ``name``."""

    name: str
    description: str
    encode: Encoder
    decode: Decoder
    channels: tuple[int, ...] = (1, 2, 3, 4)
    """Channel counts it codes (an (H, W) image counts as 1)."""

    def codes(self, image: np.ndarray) -> bool:
        return (1 if image.ndim == 2 else image.shape[2]) in self.channels


def _raw(name: str, description: str, compress: Callable[[bytes], bytes], decompress: Callable[[bytes], bytes]) -> Codec:
    """A general-purpose compressor applied to the raw pixel bytes (the shape travels outside)."""
    return Codec(name, description, lambda image: compress(image.tobytes()),
                 lambda data, shape: np.frombuffer(decompress(data), np.uint8).reshape(shape))


def _squeezed(decode: Callable[[bytes], np.ndarray]) -> Decoder:
    """Decode, dropping the channel axis imagecodecs adds or omits for grey images."""
    return lambda data, shape: np.asarray(decode(data)).reshape(shape)


def _pillow(name: str, description: str, fmt: str, **options) -> Codec:
    """An image format written and read by Pillow (decoded back to the input's mode)."""

    def encode(image: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        from_array(image).save(buffer, format=fmt, **options)
        return buffer.getvalue()

    def decode(data: bytes, shape: tuple[int, ...]) -> np.ndarray:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert(MODE_BY_CHANNELS[1 if len(shape) == 2 else shape[2]].name))

    return Codec(name, description, encode, decode)


def classical_codecs() -> list[Codec]:
    """gzip, bzip2 and LZMA on raw bytes; PNG and WebP through Pillow; the other image
    codecs through imagecodecs, where it is installed."""
    codecs = [
        _raw("gzip", "gzip -9 of the raw pixel bytes", lambda b: gzip.compress(b, 9, mtime=0), gzip.decompress),
        _raw("bzip2", "bzip2 -9 of the raw pixel bytes", lambda b: bz2.compress(b, 9), bz2.decompress),
        _raw("lzma", "LZMA -9e (xz) of the raw pixel bytes",
             lambda b: lzma.compress(b, preset=9 | lzma.PRESET_EXTREME), lzma.decompress),
        _pillow("png", "PNG, zlib level 9 with the best filters (Pillow optimize)", "PNG", optimize=True),
        _pillow("webp", "WebP lossless, method 6 (libwebp through Pillow)", "WEBP", lossless=True, quality=100, method=6, exact=True),
    ]
    try:
        import imagecodecs as ic
    except ImportError:
        return codecs
    available = [
        ("qoi", "QOI", "qoi", {}, (3, 4)),
        ("jpeg2000", "JPEG 2000 reversible (OpenJPEG)", "jpeg2k", {"reversible": True}, (1, 2, 3, 4)),
        ("jpegls", "JPEG-LS lossless (CharLS)", "jpegls", {}, (1, 3)),
        ("jpegxl-e7", "JPEG-XL lossless, effort 7 (libjxl)", "jpegxl", {"lossless": True, "effort": 7}, (1, 2, 3, 4)),
        ("jpegxl-e9", "JPEG-XL lossless, effort 9 (libjxl)", "jpegxl", {"lossless": True, "effort": 9}, (1, 2, 3, 4)),
    ]
    for name, description, library, options, channels in available:
        encode, decode = getattr(ic, f"{library}_encode", None), getattr(ic, f"{library}_decode", None)
        if encode is None or decode is None or not getattr(ic, library.upper()).available:
            continue
        codecs.append(Codec(name, description, lambda image, e=encode, o=options: bytes(e(image, **o)), _squeezed(decode), channels))
    return codecs


BENCH_METHODS = (AUTO, *METHODS)
"""What ``bitswap bench`` runs per model: the file ``compress`` writes, and each bits-back scheme
forced, so a classical fallback never hides what the model itself does."""


def bitswap_codecs(models: list[str] | None = None, methods: tuple[str, ...] = BENCH_METHODS, device: str | None = None) -> list[Codec]:
    """Bit-Swap with each model (default: every installed one) and each method."""
    codecs = []
    for model in models or sorted(zoo.available_models()):
        channels = zoo.load_model(model).config.channels
        for method in methods:
            codecs.append(Codec(
                f"{model}-{method}",
                f"Bit-Swap .bsw with model {model!r}, method {method!r}",
                lambda image, m=model, k=method: api.compress(image, model=m, method=k, device=device),
                lambda data, shape: api.decompress(data, device=device),
                (3, 4) if channels == 3 else (1, 2),  # alpha is coded with the default grey model
            ))
    return codecs


def all_codecs(models: list[str] | None = None, methods: tuple[str, ...] = BENCH_METHODS, device: str | None = None) -> list[Codec]:
    return bitswap_codecs(models, methods, device) + classical_codecs()


def select(codecs: list[Codec], names: list[str] | None) -> Iterator[Codec]:
    """The codecs whose names start with any of ``names`` (all when None)."""
    for codec in codecs:
        if names is None or any(codec.name.startswith(n) for n in names):
            yield codec
