"""Bad input gets a clear BitSwapError (a ValueError) and never wrong pixels."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

import bitswap_plugin as bsw
from bitswap_plugin import container
from bitswap_plugin.errors import (
    BitSwapError,
    CorruptFileError,
    ImageTooLargeError,
    InvalidImageError,
    InvalidOptionError,
    ModelNotFoundError,
    UnsupportedFormatError,
)
from bitswap_plugin.fileformat import VERSIONS, StreamPlan


def _encode(height: int, width: int) -> tuple[np.ndarray, bytes]:
    rng = np.random.default_rng(7)
    ramp = np.add.outer(np.arange(height), np.arange(width))[:, :, None]
    image = (ramp + rng.integers(0, 9, (height, width, 3))).astype(np.uint8)
    return image, bsw.compress(image, method="bitswap")  # the bits-back stream's checks


@pytest.fixture(scope="module")
def encoded() -> tuple[np.ndarray, bytes]:
    """An image with more patches than the all-seed path considers: seed plus patch groups."""
    return _encode(96, 176)


def _rewrite_header(data: bytes, **changes) -> bytes:
    header, head, tail = container.unpack(data)
    for name, value in changes.items():
        setattr(header.plan if hasattr(header.plan, name) else header, name, value)
    return container.pack(header, head, tail)


def test_errors_are_value_errors():
    for cls in (CorruptFileError, ImageTooLargeError, InvalidImageError, InvalidOptionError, ModelNotFoundError, UnsupportedFormatError):
        assert issubclass(cls, BitSwapError) and issubclass(cls, ValueError)


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((4, 4), np.uint16), "uint8"),
        (np.zeros((4, 4), np.float32), "uint8"),
        (np.zeros((4, 4), bool), "uint8"),
        (np.zeros((2, 4, 4, 5), np.uint8), "C in 1..4"),
        (np.zeros((1, 2, 4, 4, 3), np.uint8), "C in 1..4"),
        (np.zeros(16, np.uint8), "C in 1..4"),
        (np.zeros((0, 4), np.uint8), "empty"),
        (np.zeros((4, 0, 3), np.uint8), "empty"),
        (b"not an image", "bytes"),
        ([[1, 2], [3, 4]], "uint8"),
    ],
)
def test_invalid_arrays_are_refused(array, message):
    with pytest.raises(InvalidImageError, match=message):
        bsw.compress(array)


def test_unknown_method_and_model_are_refused():
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(InvalidOptionError, match="unknown method 'cabac': choose one of auto, bitswap, bbans, raw, png, webp"):
        bsw.compress(image, method="cabac")
    with pytest.raises(ModelNotFoundError, match="no-such-model"):
        bsw.compress(image, model="no-such-model")
    with pytest.raises(InvalidImageError, match="3-channel"):
        bsw.compress(np.zeros((8, 8), np.uint8), model="tiny-rgb")


def test_too_many_pixels_refused_before_work():
    with pytest.raises(ImageTooLargeError):
        bsw.compress(np.zeros((64, 64), np.uint8), max_pixels=1000)


def test_every_truncation_is_detected(encoded):
    _, data = encoded
    for length in list(range(0, 120)) + list(range(120, len(data), 97)):
        with pytest.raises(CorruptFileError):
            bsw.decompress(data[:length])


def test_trailing_bytes_are_detected(encoded):
    _, data = encoded
    with pytest.raises(CorruptFileError, match="unexpected bytes"):
        bsw.decompress(data + b"\0")


def test_wrong_magic_and_foreign_files(encoded):
    _, data = encoded
    with pytest.raises(CorruptFileError, match="magic"):
        bsw.decompress(b"\x89PNG\r\n\x1a\n" + data[8:])
    with pytest.raises(CorruptFileError):
        bsw.decompress(b"")
    with pytest.raises(CorruptFileError, match="bytes"):
        bsw.decompress(np.zeros(10, np.uint8))  # an array is not a stream


def test_unknown_version(encoded):
    _, data = encoded
    with pytest.raises(UnsupportedFormatError, match="version 9 is not supported"):
        bsw.decompress(data[:8] + b"\x09" + data[9:])


def test_header_corruption_is_caught_by_its_checksum(encoded):
    _, data = encoded
    damaged = bytearray(data)
    damaged[13] ^= 0x01  # height
    with pytest.raises(CorruptFileError, match="checksum"):
        bsw.decompress(bytes(damaged))


def test_payload_corruption_never_returns_wrong_pixels(encoded):
    image, data = encoded
    header_size = container.read_header(data)[1]
    rng = np.random.default_rng(3)
    for position in rng.integers(header_size, len(data), 10):
        damaged = bytearray(data)
        damaged[position] ^= 1 << int(rng.integers(8))
        try:
            out = bsw.decompress(bytes(damaged))
        except CorruptFileError:
            continue
        np.testing.assert_array_equal(out, image)  # only harmless flips may decode


def test_inconsistent_schedule_is_corrupt(encoded):
    _, data = encoded
    header = container.unpack(data)[0]
    with pytest.raises(CorruptFileError):
        bsw.decompress(_rewrite_header(data, group_sizes=header.plan.group_sizes[:-1], lanes_added=header.plan.lanes_added[:-1]))
    with pytest.raises(CorruptFileError):
        bsw.decompress(_rewrite_header(data, seed_patches=0))


def test_missing_model_is_named(encoded):
    _, data = encoded
    with pytest.raises(ModelNotFoundError, match="'imaginary-v9'"):
        bsw.decompress(_rewrite_header(data, models=[("imaginary-v9", "ab" * 32)]))


def test_model_with_other_hash_is_refused(encoded):
    _, data = encoded
    header = container.unpack(data)[0]
    with pytest.raises(ModelNotFoundError, match="hash"):
        bsw.decompress(_rewrite_header(data, models=[(header.models[0][0], "00" * 32)]))


def test_pixel_checksum_guards_the_output(encoded):
    _, data = encoded
    with pytest.raises(CorruptFileError, match="checksum"):
        bsw.decompress(_rewrite_header(data, pixel_crc=(container.unpack(data)[0].pixel_crc + 1) % 2**32))


def test_read_info_rejects_garbage():
    with pytest.raises(CorruptFileError):
        bsw.read_info(b"\x89BSW\r\n\x1a\n" + struct.pack("<B", 1) + bytes(3))
    with pytest.raises(CorruptFileError):
        bsw.read_info(zlib.compress(b"hello"))


@pytest.mark.parametrize("version, accepted", [(1, False), (2, True)])
def test_group_and_lane_limits_follow_the_format_version(version: int, accepted: bool) -> None:
    """Version 1 streams never had groups over 256 patches or over 4096 lanes; version 2 may."""
    plan = StreamPlan("bitswap", seed_patches=1, seed_length=10_000, group_sizes=[1, 300, 98], lanes_added=[5000, 0, 0],
                      version=VERSIONS[version])
    header = container.Header(
        height=640, width=640, mode="L", pixel_crc=0, frames=1, stack=False, channel_axis=False,
        models=[("bitswap-gray", "00" * 32)], plane_models=[0], plan=plan, num_lanes=5000,
    )
    data = container.pack(header, b"", b"")
    if accepted:
        assert container.read_header(data)[0].plan.group_sizes == [1, 300, 98]
    else:
        with pytest.raises(CorruptFileError, match="not 1 to 256 patches"):
            container.read_header(data)


def test_several_channels_need_the_channel_axis_flag(encoded):
    _, data = encoded
    with pytest.raises(CorruptFileError, match="several channels without the channel-axis flag"):
        bsw.read_info(_rewrite_header(data, channel_axis=False))
