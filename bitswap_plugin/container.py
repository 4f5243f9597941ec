"""The ``.bsw`` container: a checksummed header in front of an ANS payload.

The byte layout is specified in ``docs/FORMAT.md``. This module only packs and
unpacks it and checks everything that can be checked without decoding: magic,
version, header checksum, field ranges, that the coding schedule fits the image,
and that the file is exactly as long as the header says. The decoded pixels are checked against ``pixel_crc`` by the API.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from . import fileformat
from .errors import CorruptFileError, TruncatedFileError, UnsupportedFormatError
from .fileformat import MAGIC, MODES, PATCH, StreamPlan

_MODE_NAMES = tuple(MODES)
_FIXED = struct.Struct("<8sBBBBBIIII")  # magic, version, mode, method, patch, flags, height, width, frames, pixel crc
_FLAG_STACK = 1
_FLAG_CHANNEL_AXIS = 2
"""Version 3 on: the array had a channel axis (an (H, W, 1) image, an (N, H, W, 1) stack)."""
_MAX_VARINT_BYTES = 10
DEFLATE_MAX_RATIO = 1032
"""Deflate writes at most 258 bytes per 2 bits (a length and a distance code): a seed of
``n`` bytes inflates to at most ``1032 n`` bytes."""


@dataclass
class Header:
    """Everything a decoder needs besides the payload."""

    height: int
    width: int
    mode: str
    pixel_crc: int
    frames: int
    """Number of images coded in one chain (all of one size and mode)."""
    stack: bool
    """The input was a stack of frames (N, H, W[, C]), to be returned as one."""
    channel_axis: bool
    """The input had a channel axis, also for one channel (always for streams before version 3 but
    single L images)."""
    models: list[tuple[str, str]]
    """(name, sha256 hex) of each model the stream uses."""
    plane_models: list[int]
    """Index into ``models`` of the model coding each plane."""
    plan: StreamPlan
    num_lanes: int = 0
    head_length: int = 0
    tail_length: int = 0


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


class _Reader:
    """Bounds-checked reads from the header bytes."""

    def __init__(self, data: bytes, offset: int) -> None:
        self.data = data
        self.offset = offset

    def take(self, count: int) -> bytes:
        end = self.offset + count
        if end > len(self.data):
            raise TruncatedFileError(f"truncated .bsw file: the header needs more than {len(self.data)} bytes")
        chunk = self.data[self.offset : end]
        self.offset = end
        return bytes(chunk)

    def varint(self) -> int:
        value = 0
        for i in range(_MAX_VARINT_BYTES):
            byte = self.take(1)[0]
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                return value
        raise CorruptFileError("corrupt .bsw file: malformed header field")


def pack(header: Header, head_bytes: bytes, tail_bytes: bytes) -> bytes:
    """Serialize a header and payload into a complete ``.bsw`` byte string."""
    body = bytearray(
        _FIXED.pack(
            MAGIC,
            header.plan.version.number,
            _MODE_NAMES.index(header.mode),
            fileformat.METHODS.index(header.plan.method),
            PATCH,
            (_FLAG_STACK if header.stack else 0) | (_FLAG_CHANNEL_AXIS if header.channel_axis and header.plan.version.number >= 3 else 0),
            header.height,
            header.width,
            header.frames,
            header.pixel_crc,
        )
    )
    body += bytes([len(header.models)])
    for name, digest in header.models:
        encoded = name.encode()
        body += bytes([len(encoded)]) + encoded + bytes.fromhex(digest)
    body += bytes(header.plane_models)
    plan = header.plan
    for value in (plan.seed_patches, plan.seed_length, len(plan.group_sizes)):
        body += _varint(value)
    for size, lanes in zip(plan.group_sizes, plan.lanes_added):
        body += _varint(size) + _varint(lanes)
    for value in (header.num_lanes, len(head_bytes), len(tail_bytes)):
        body += _varint(value)
    body += struct.pack("<I", zlib.crc32(body))
    return bytes(body) + head_bytes + tail_bytes


def _patch_area(height: int, width: int, count: int) -> int:
    """Pixels covered by the first ``count`` patches (raster order) of a ``height x width`` plane."""
    cols = -(-width // PATCH)
    full_rows, rest = divmod(count, cols)
    area = min(height, PATCH * full_rows) * width
    if rest:
        area += min(PATCH, height - PATCH * full_rows) * min(width, PATCH * rest)
    return area


def seed_subpixels(header: Header) -> int:
    """Size in bytes of the seed's pixels: the first ``seed_patches`` patches of the chain."""
    per_plane = -(-header.height // PATCH) * -(-header.width // PATCH)
    channels = [plane.channels for plane in MODES[header.mode].planes]
    whole, rest = divmod(header.plan.seed_patches, per_plane)  # whole planes, then patches of the next
    subpixels = 0
    for kind, count in enumerate(channels):  # the first planes of every frame, then the second
        subpixels += count * min(max(whole - kind * header.frames, 0), header.frames) * header.height * header.width
    if rest:
        subpixels += channels[whole // header.frames] * _patch_area(header.height, header.width, rest)
    return subpixels


def _check_structure(header: Header) -> None:
    """Refuse schedules no encoder writes, before a decoder allocates or computes anything:
    the seed and groups must cover the patches exactly, groups be 1..MAX_GROUP patches, the
    lanes the groups add be the final lanes (the first group adds one at least), and the
    seed be long enough to inflate to its pixels."""
    plan = header.plan
    total = len(MODES[header.mode].planes) * header.frames * -(-header.height // PATCH) * -(-header.width // PATCH)
    sizes, lanes = plan.group_sizes, plan.lanes_added
    if not 1 <= plan.seed_patches <= total or plan.seed_patches + sum(sizes) != total:
        raise CorruptFileError("corrupt .bsw file: seed and groups do not cover the image")
    max_group, max_lanes = plan.version.max_group, plan.version.max_lanes
    if any(not 1 <= size <= max_group for size in sizes):
        raise CorruptFileError(f"corrupt .bsw file: a group is not 1 to {max_group} patches")
    if header.num_lanes != sum(lanes) or header.num_lanes > max_lanes or (lanes and not lanes[0]):
        raise CorruptFileError("corrupt .bsw file: implausible lane counts")
    if seed_subpixels(header) > DEFLATE_MAX_RATIO * plan.seed_length:
        raise CorruptFileError("corrupt .bsw file: the seed is too short for its pixels")


def read_header(data: bytes) -> tuple[Header, int]:
    """Parse and verify the header at the start of ``data``: (header, payload offset).

    Needs only the header bytes, not the payload; the payload lengths are read
    but not checked against ``len(data)`` (:func:`unpack` does that).
    """
    data = memoryview(data)
    if bytes(data[: len(MAGIC)]) != MAGIC[: len(data)]:
        raise CorruptFileError("not a .bsw file (wrong magic bytes)")
    if len(data) < _FIXED.size:
        raise TruncatedFileError(f"truncated .bsw file: {len(data)} bytes, shorter than any header")
    _, version, mode, method, patch, flags, height, width, frames, crc = _FIXED.unpack_from(data)
    if version not in fileformat.VERSIONS:
        known = ", ".join(map(str, fileformat.VERSIONS))
        raise UnsupportedFormatError(f".bsw format version {version} is not supported (this reader knows versions {known})")
    reader = _Reader(data, _FIXED.size)
    models = []
    for _ in range(reader.take(1)[0]):
        name = reader.take(reader.take(1)[0])
        models.append((name.decode("utf-8", "replace"), reader.take(32).hex()))
    known_flags = _FLAG_STACK | (_FLAG_CHANNEL_AXIS if version >= 3 else 0)
    if mode >= len(MODES) or method >= len(fileformat.METHODS) or patch != PATCH or flags & ~known_flags:
        raise CorruptFileError("corrupt .bsw file: invalid mode, method, patch size or flags")
    if not (height and width and frames):
        raise CorruptFileError("corrupt .bsw file: empty image")
    if frames > 1 and not flags & _FLAG_STACK:
        raise CorruptFileError("corrupt .bsw file: several frames without the stack flag")
    if version >= 3 and MODES[_MODE_NAMES[mode]].channels > 1 and not flags & _FLAG_CHANNEL_AXIS:
        raise CorruptFileError("corrupt .bsw file: an image of several channels without the channel-axis flag")
    mode_name = _MODE_NAMES[mode]
    plane_models = list(reader.take(len(MODES[mode_name].planes)))
    seed_patches, seed_length, group_count = reader.varint(), reader.varint(), reader.varint()
    if 2 * group_count > len(data) - reader.offset:
        raise TruncatedFileError(f"truncated .bsw file: the header lists {group_count} groups, more than {len(data)} bytes hold")
    groups = [(reader.varint(), reader.varint()) for _ in range(group_count)]
    num_lanes, head_length, tail_length = reader.varint(), reader.varint(), reader.varint()
    header_end = reader.offset
    (stored_crc,) = struct.unpack("<I", reader.take(4))
    if zlib.crc32(data[:header_end]) != stored_crc:
        raise CorruptFileError("corrupt .bsw file: header checksum mismatch")
    if any(index >= len(models) for index in plane_models):
        raise CorruptFileError("corrupt .bsw file: plane refers to a missing model")
    if tail_length % 4:
        raise CorruptFileError("corrupt .bsw file: the tail is not a whole number of words")
    header = Header(
        height=height,
        width=width,
        mode=mode_name,
        pixel_crc=crc,
        frames=frames,
        stack=bool(flags & _FLAG_STACK),
        channel_axis=bool(flags & _FLAG_CHANNEL_AXIS) if version >= 3 else bool(flags & _FLAG_STACK) or mode_name != "L",
        models=models,
        plane_models=plane_models,
        plan=StreamPlan(
            method=fileformat.METHODS[method],
            seed_patches=seed_patches,
            seed_length=seed_length,
            group_sizes=[size for size, _ in groups],
            lanes_added=[lanes for _, lanes in groups],
            version=fileformat.VERSIONS[version],
        ),
        num_lanes=num_lanes,
        head_length=head_length,
        tail_length=tail_length,
    )
    _check_structure(header)
    return header, reader.offset


def unpack(data: bytes) -> tuple[Header, bytes, bytes]:
    """Parse and verify a whole ``.bsw`` byte string: (header, head bytes, tail bytes)."""
    header, start = read_header(data)
    end = start + header.head_length + header.tail_length
    if len(data) < end:
        raise TruncatedFileError(f"truncated .bsw file: {len(data)} bytes, the header promises {end}")
    if len(data) > end:
        raise CorruptFileError(f"corrupt .bsw file: {len(data) - end} unexpected bytes after the payload")
    middle = start + header.head_length
    return header, bytes(data[start:middle]), bytes(data[middle:end])
