"""Pillow plugin for ``.bsw`` files: format ``BSW``, registered when ``bitswap_plugin`` is imported.

``Image.open`` reads only the header (size, mode, frames); ``load()`` decodes.
A stack is one bits-back chain, so the first ``load()`` decodes every frame and
``seek`` then picks one. ``im.save("x.bsw", model=..., method=..., device=...)``
writes L, LA, RGB and RGBA (1 and P converted losslessly); ``save_all=True``
writes all frames (and ``append_images``), all of one size and mode, as a stack.
The ICC profile, EXIF, XMP, DPI and PNG text of ``im.info`` (or the save
call's ``icc_profile=``, ``exif=``, ``xmp=``, ``dpi=``) are stored and come back
in ``im.info``.

The decoding device is the image's ``device`` attribute, set between
``Image.open`` and ``load()`` as Pillow's JPEG 2000 plugin takes ``reduce`` and
``layers``; it starts as ``None``: ``$BITSWAP_DEVICE``, else the CPU (which
also covers readers that never show the image object: imageio, matplotlib).
"""

from __future__ import annotations

import sys
from typing import IO

import numpy as np
from PIL import Image, ImageFile, ImageSequence, UnidentifiedImageError

from . import api
from .errors import BitSwapError, InvalidImageError, TruncatedFileError
from .fileformat import MAGIC, MODES
from .images import info_of, metadata_of, text_of, to_array

FORMAT = "BSW"
MIME = "image/x-bsw"
_FIRST_READ = 512
"""Bytes read first to parse the header (a header is rarely longer)."""
_MAX_HEADER = 1 << 22
"""Most header bytes read: a header holds two varints per patch group, and the pixel limit
(2**28 pixels padded to 32x32 patches) allows 2**18 groups, besides at most 1 MiB of metadata."""


def _accept(prefix: bytes) -> bool:
    return prefix.startswith(MAGIC)


def _read_header(fp: IO[bytes]) -> api.ImageInfo:
    """Parse the header at the start of ``fp``: one read, and more only while the header is cut short."""
    data = fp.read(_FIRST_READ)
    while True:
        try:
            return api.read_info(data)
        except TruncatedFileError:
            more = fp.read(min(len(data), _MAX_HEADER - len(data)))
            if not more:
                raise
            data += more


def _pixel_limit() -> int:
    """Pillow's decompression-bomb error threshold (no limit when MAX_IMAGE_PIXELS is None)."""
    return sys.maxsize if Image.MAX_IMAGE_PIXELS is None else 2 * Image.MAX_IMAGE_PIXELS


class _Stream:
    """What the decoder of every frame of one file shares: where to decode, and the decoded stack."""

    def __init__(self, name: str, size: tuple[int, int], mode: str) -> None:
        self.name, self.size, self.mode = name, size, mode
        self.device: str | None = None
        self.frames: np.ndarray | None = None

    def decode(self, fp: IO[bytes]) -> np.ndarray:
        """All frames, (N, H, W, C), decoded from ``fp`` (positioned at the stream's start) the first time."""
        if self.frames is None:
            device = api.resolve_device(self.device)  # a bad device is the caller's DeviceError, not a bad file
            try:
                # Image.open has checked the pixels against MAX_IMAGE_PIXELS; Pillow's error threshold
                # replaces the API's own limit on the coder's work (frames padded to whole patches)
                array = api.decompress(fp.read(), device=device, max_pixels=_pixel_limit())
            except BitSwapError as exc:
                raise OSError(f"cannot decode {self.name}: {exc}") from exc
            width, height = self.size
            self.frames = array.reshape(-1, height, width, MODES[self.mode].channels)
        return self.frames


class BswDecoder(ImageFile.PyDecoder):
    """Hands Pillow one frame of a ``.bsw`` stream, decoding the whole stream (a stack is one
    chain) once per file. Tile arguments: (frame index, the file's shared :class:`_Stream`)."""

    _pulls_fd = True

    def decode(self, buffer: bytes | Image.SupportsArrayInterface) -> tuple[int, int]:
        assert self.fd is not None
        frame, stream = self.args
        self.set_as_raw(stream.decode(self.fd)[frame].tobytes())
        return -1, 0


class BswImageFile(ImageFile.ImageFile):
    format = FORMAT
    format_description = "Bit-Swap learned lossless image"
    _close_exclusive_fp_after_loading = False  # seek() may load another frame

    def _open(self) -> None:
        assert self.fp is not None
        try:
            info = _read_header(self.fp)
        except BitSwapError as exc:
            raise UnidentifiedImageError(f"cannot identify image file {self.filename or self.fp!r}: {exc}") from exc
        self._size = (info.width, info.height)
        self._mode = info.mode
        self.n_frames = info.frames
        self.is_animated = info.frames > 1
        self.info.update(info_of(info.metadata), method=info.method, models=info.models)
        self._text = text_of(info.metadata)
        if info.frames > 1:
            # the whole stack is decoded at once: check it like one image of all its pixels
            Image._decompression_bomb_check((info.width, info.height * info.frames))
        self._stream = _Stream(str(self.filename or "image"), self._size, self._mode)
        self._fp = self.fp  # Pillow drops fp after each load; another frame needs it back
        self._frame = 0
        self._set_tile()

    @property
    def text(self) -> dict[str, str]:
        """The stored text chunks (as PngImageFile.text), kept when the image is saved again."""
        return dict(self._text)

    @property
    def device(self) -> str | None:
        """Where ``load()`` decodes: cpu, cuda, cuda:N, auto; None: ``$BITSWAP_DEVICE``, else the CPU."""
        return self._stream.device

    @device.setter
    def device(self, value: str | None) -> None:
        self._stream.device = value

    def _set_tile(self) -> None:
        self.tile = [ImageFile._Tile("bsw", (0, 0, *self.size), 0, (self._frame, self._stream))]

    def seek(self, frame: int) -> None:
        if self._seek_check(frame) and frame != self._frame:
            self._frame = frame
            self.fp = self._fp
            self._set_tile()

    def tell(self) -> int:
        return self._frame

    def load(self) -> Image.core.PixelAccess | None:
        if self.tile and self._stream.frames is None:
            # decode before Pillow allocates the image: a damaged stream fails without that memory
            assert self.fp is not None
            self.fp.seek(0)
            self._stream.decode(self.fp)
        return super().load()


def _array(image: Image.Image) -> np.ndarray:
    try:
        return to_array(image)
    except InvalidImageError as exc:
        raise OSError(f"cannot write mode {image.mode} as {FORMAT}: {exc}") from exc


def _write(fp: IO[bytes], images: list[Image.Image], options: dict) -> None:
    """Compress one image, or several of one size and mode as a stack, into ``fp``."""
    arrays = [_array(image) for image in images]
    if len({array.shape for array in arrays}) > 1:
        found = sorted({(image.mode, image.size) for image in images})
        raise InvalidImageError(f"all frames of a {FORMAT} stack need one size and mode, got {found}")
    stack = arrays[0] if len(arrays) == 1 else np.stack([a if a.ndim == 3 else a[..., None] for a in arrays])
    metadata = metadata_of(images[0], options)
    fp.write(api.compress(stack, model=options.get("model"), method=options.get("method", "auto"), device=options.get("device"), metadata=metadata))


def _save(im: Image.Image, fp: IO[bytes], filename: str | bytes) -> None:
    _write(fp, [im], im.encoderinfo)


def _save_all(im: Image.Image, fp: IO[bytes], filename: str | bytes) -> None:
    _write(fp, ImageSequence.all_frames([im, *im.encoderinfo.get("append_images", [])]), im.encoderinfo)


Image.register_open(FORMAT, BswImageFile, _accept)
Image.register_decoder("bsw", BswDecoder)
Image.register_save(FORMAT, _save)
Image.register_save_all(FORMAT, _save_all)
Image.register_extension(FORMAT, ".bsw")
Image.register_mime(FORMAT, MIME)
