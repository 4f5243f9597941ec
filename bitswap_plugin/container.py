"""The ``.bsw`` container: a checksummed header in front of an ANS payload.

The byte layout is specified in ``docs/FORMAT.md``. This module only packs and
unpacks it and checks everything that can be checked without decoding: magic,
version, header checksum, field ranges, that the coding schedule fits the image,
and that the file is exactly as long as the header says. The decoded pixels are checked against ``pixel_crc`` by the API.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from . import fileformat
from .errors import CorruptFileError, TruncatedFileError, UnsupportedFormatError
from .fileformat import MAGIC, MAX_METADATA_BYTES, METHODS, MODES, PATCH, SCALE_OFFSET_RANGE, Mode, StreamPlan, coded_mode, smooth_blend

_MODE_NAMES = tuple(MODES)
_FIXED = struct.Struct("<8sBBBBBIIII")  # magic, version, mode, method, patch, flags, height, width, frames, pixel crc
_FLAG_STACK = 1
_FLAG_CHANNEL_AXIS = 2
"""Version 3 on: the array had a channel axis (an (H, W, 1) image, an (N, H, W, 1) stack)."""
_FLAG_GREY_COLOUR = 4
"""Version 4 on: R = G = B everywhere; the colour plane is coded as one channel."""
_FLAG_CONSTANT_ALPHA = 8
"""Version 4 on: the alpha plane is one value, stored in the header and not coded."""
_FLAG_METADATA = 16
"""Version 4 on: metadata entries follow the fixed header."""
_FLAGS_SINCE = {_FLAG_STACK: 1, _FLAG_CHANNEL_AXIS: 3, _FLAG_GREY_COLOUR: 4, _FLAG_CONSTANT_ALPHA: 4, _FLAG_METADATA: 4}
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
    """The method, and for the bits-back methods the coding schedule."""
    num_lanes: int = 0
    head_length: int = 0
    """Bytes of the lane heads, or of the whole payload of a classical method."""
    tail_length: int = 0
    grey_colour: bool = False
    """R = G = B in every pixel: only one colour channel is coded."""
    alpha: int | None = None
    """The value of every alpha pixel when alpha is constant and not coded."""
    metadata: dict[str, bytes] = field(default_factory=dict)
    """Named byte strings kept with the pixels (ICC profile, EXIF, resolution, text)."""

    @property
    def coded_mode(self) -> Mode:
        """The mode of the planes the payload codes."""
        return coded_mode(self.mode, self.grey_colour, self.alpha is not None)

    @property
    def learned(self) -> bool:
        """Whether the payload is a bits-back ANS message (else a classical method's)."""
        return self.plan.method in METHODS


def varint(value: int) -> bytes:
    """``value`` as unsigned LEB128."""
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
        value, self.offset = read_varint(self.data, self.offset)
        return value


def read_varint(data: bytes | memoryview, offset: int) -> tuple[int, int]:
    """The unsigned LEB128 at ``data[offset:]`` and the offset after it."""
    value = 0
    for i in range(_MAX_VARINT_BYTES):
        if offset >= len(data):
            raise TruncatedFileError(f"truncated .bsw file: a field runs past the {len(data)} bytes read")
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, offset
    raise CorruptFileError("corrupt .bsw file: malformed varint field")


def _flags(header: Header) -> int:
    """The flag byte; the channel-axis flag is implied before version 3 (not stored)."""
    version = header.plan.version.number
    flags = 0
    for flag, on in (
        (_FLAG_STACK, header.stack),
        (_FLAG_CHANNEL_AXIS, header.channel_axis),
        (_FLAG_GREY_COLOUR, header.grey_colour),
        (_FLAG_CONSTANT_ALPHA, header.alpha is not None),
        (_FLAG_METADATA, bool(header.metadata)),
    ):
        if on and version >= _FLAGS_SINCE[flag]:
            flags |= flag
        elif on and flag != _FLAG_CHANNEL_AXIS:
            raise ValueError(f"format version {version} cannot store flag {flag}")
    return flags


def pack(header: Header, head_bytes: bytes, tail_bytes: bytes = b"") -> bytes:
    """Serialize a header and payload (for a classical method, ``head_bytes`` is the whole
    payload) into a complete ``.bsw`` byte string."""
    body = bytearray(
        _FIXED.pack(
            MAGIC,
            header.plan.version.number,
            _MODE_NAMES.index(header.mode),
            fileformat.CODING_METHODS.index(header.plan.method),
            PATCH,
            _flags(header),
            header.height,
            header.width,
            header.frames,
            header.pixel_crc,
        )
    )
    if header.alpha is not None:
        body.append(header.alpha)
    if header.metadata:
        body += varint(len(header.metadata))
        for key, value in header.metadata.items():
            encoded = key.encode()
            body += varint(len(encoded)) + encoded + varint(len(value)) + value
    if header.learned:
        plan = header.plan
        body += bytes([len(header.models)])
        all_offsets = _step_bytes(header, "scale_offsets", "scale offsets", plan.version.scale_offsets, _signed_byte)
        all_blends = _step_bytes(header, "smooth_blends", "smooth-area blends", plan.version.smooth_blends, smooth_blend)
        for (name, digest), offsets, blends in zip(header.models, all_offsets, all_blends, strict=True):
            encoded = name.encode()
            body += bytes([len(encoded)]) + encoded + bytes.fromhex(digest)
            if plan.version.scale_offsets:
                body += bytes([len(offsets)]) + struct.pack(f"<{len(offsets)}b", *offsets)
            if plan.version.smooth_blends:
                body += bytes([len(blends)]) + bytes(blends)
        body += bytes(header.plane_models)
        for value in (plan.seed_patches, plan.seed_length, len(plan.group_sizes)):
            body += varint(value)
        for size, lanes in zip(plan.group_sizes, plan.lanes_added):
            body += varint(size) + varint(lanes)
        body += varint(header.num_lanes)
    for value in (len(head_bytes), len(tail_bytes)) if header.learned else (len(head_bytes),):
        body += varint(value)
    body += struct.pack("<I", zlib.crc32(body))
    return bytes(body) + head_bytes + tail_bytes


def _signed_byte(value: int) -> None:
    if value not in SCALE_OFFSET_RANGE:
        raise ValueError(f"scale offsets must be signed bytes, got {value}")


def _step_bytes(header: Header, field: str, label: str, stored: bool, check: Callable[[int], object]) -> list[tuple[int, ...]]:
    """Each model's per-step values of the plan's ``field`` (``label`` in messages) as the header
    stores them, none for every model if the plan has none; raises ValueError where this version
    does not store them (``stored``) or ``check`` refuses a value."""
    plan = header.plan
    values = getattr(plan, field) or [()] * len(header.models)
    if getattr(plan, field) and not stored:
        raise ValueError(f"format version {plan.version.number} cannot store {label}")
    if len(values) != len(header.models) or any(len(steps) > 255 for steps in values):
        raise ValueError(f"{label} must be at most 255 per model, got {values}")
    for steps in values:
        for value in steps:
            check(value)
    return values


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
    channels = [plane.channels for plane in header.coded_mode.planes]
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
    total = len(header.coded_mode.planes) * header.frames * -(-header.height // PATCH) * -(-header.width // PATCH)
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


def _read_metadata(reader: _Reader) -> dict[str, bytes]:
    metadata: dict[str, bytes] = {}
    budget = MAX_METADATA_BYTES
    for _ in range(reader.varint()):
        key_length = reader.varint()
        if key_length > budget:
            raise CorruptFileError(f"corrupt .bsw file: more than {MAX_METADATA_BYTES} bytes of metadata")
        try:
            key = reader.take(key_length).decode()
        except UnicodeDecodeError:
            raise CorruptFileError("corrupt .bsw file: a metadata name is not UTF-8") from None
        value_length = reader.varint()
        budget -= key_length + value_length
        if budget < 0:
            raise CorruptFileError(f"corrupt .bsw file: more than {MAX_METADATA_BYTES} bytes of metadata")
        if key in metadata:
            raise CorruptFileError(f"corrupt .bsw file: metadata entry {key!r} appears twice")
        metadata[key] = reader.take(value_length)
    return metadata


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
    known_flags = sum(flag for flag, since in _FLAGS_SINCE.items() if version >= since)
    methods = fileformat.CODING_METHODS if fileformat.VERSIONS[version].fallbacks else METHODS
    if mode >= len(MODES) or method >= len(methods) or patch != PATCH or flags & ~known_flags:
        raise CorruptFileError("corrupt .bsw file: invalid mode, method, patch size or flags")
    mode_name = _MODE_NAMES[mode]
    if not (height and width and frames):
        raise CorruptFileError("corrupt .bsw file: empty image")
    if frames > 1 and not flags & _FLAG_STACK:
        raise CorruptFileError("corrupt .bsw file: several frames without the stack flag")
    if version >= 3 and MODES[mode_name].channels > 1 and not flags & _FLAG_CHANNEL_AXIS:
        raise CorruptFileError("corrupt .bsw file: an image of several channels without the channel-axis flag")
    if (flags & _FLAG_GREY_COLOUR and mode_name not in ("RGB", "RGBA")) or (flags & _FLAG_CONSTANT_ALPHA and mode_name not in ("LA", "RGBA")):
        raise CorruptFileError(f"corrupt .bsw file: a {mode_name} image with grey-colour or constant-alpha flags")
    reader = _Reader(data, _FIXED.size)
    alpha = reader.take(1)[0] if flags & _FLAG_CONSTANT_ALPHA else None
    metadata = _read_metadata(reader) if flags & _FLAG_METADATA else {}
    plan = StreamPlan(method=methods[method], version=fileformat.VERSIONS[version])
    models, plane_models, num_lanes, tail_length = [], [], 0, 0
    coded = coded_mode(mode_name, bool(flags & _FLAG_GREY_COLOUR), alpha is not None)
    if plan.method in METHODS:
        for _ in range(reader.take(1)[0]):
            name = reader.take(reader.take(1)[0])
            models.append((name.decode("utf-8", "replace"), reader.take(32).hex()))
            if plan.version.scale_offsets:
                raw = reader.take(reader.take(1)[0])
                plan.scale_offsets.append(struct.unpack(f"<{len(raw)}b", raw))
            if plan.version.smooth_blends:
                blends = tuple(reader.take(reader.take(1)[0]))
                try:
                    for code in blends:
                        smooth_blend(code)
                except ValueError as exc:
                    raise CorruptFileError(f"corrupt .bsw file: {exc}") from None
                plan.smooth_blends.append(blends)
        plane_models = list(reader.take(len(coded.planes)))
        plan.seed_patches, plan.seed_length, group_count = reader.varint(), reader.varint(), reader.varint()
        if 2 * group_count > len(data) - reader.offset:
            raise TruncatedFileError(f"truncated .bsw file: the header lists {group_count} groups, more than {len(data)} bytes hold")
        groups = [(reader.varint(), reader.varint()) for _ in range(group_count)]
        plan.group_sizes, plan.lanes_added = [size for size, _ in groups], [lanes for _, lanes in groups]
        num_lanes, head_length, tail_length = reader.varint(), reader.varint(), reader.varint()
    else:
        head_length = reader.varint()
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
        plan=plan,
        num_lanes=num_lanes,
        head_length=head_length,
        tail_length=tail_length,
        grey_colour=bool(flags & _FLAG_GREY_COLOUR),
        alpha=alpha,
        metadata=metadata,
    )
    if header.learned:
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
