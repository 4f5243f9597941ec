"""What a ``.bsw`` stream is, in one place: modes, planes, methods, versions and their limits.

Every other module asks this one: the container packs these values into the
header (``docs/FORMAT.md``), the API splits images into planes by :data:`MODES`,
the coders follow a :class:`StreamPlan`, and the front ends name the same
methods and magic bytes. Nothing here computes; it is the vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import InvalidOptionError

MAGIC = b"\x89BSW\r\n\x1a\n"
"""The first 8 bytes of every stream (catch text-mode and 7-bit damage, like PNG's)."""
PATCH = 32
"""Side of the square patches the planes are cut into (a header field; only 32 is defined)."""


@dataclass(frozen=True)
class Version:
    """What one format version means for a decoder."""

    number: int
    max_group: int
    """Most patches in one group (bounds a decoder's memory per group)."""
    max_lanes: int
    """Most ANS lanes a stream may have."""
    spread_posterior: bool
    """Whether the posterior's pushes and pops are spread (see :mod:`.ans`)."""
    pixel_context: bool
    """Whether a model may decode the pixels in passes with local pixel context (``bitswap-polyphase``)."""
    fallbacks: bool = False
    """Whether a stream may be coded by a classical method (:data:`FALLBACKS`), drop redundant
    planes (grey colour, constant alpha) and carry metadata."""
    scale_offsets: bool = False
    """Whether each model of a stream carries log-scale offsets for its likelihood's steps
    (:attr:`StreamPlan.scale_offsets`)."""
    smooth_blends: bool = False
    """Whether each model of a stream carries smooth-area blends for its likelihood's steps
    (:attr:`StreamPlan.smooth_blends`)."""


VERSIONS = {
    1: Version(1, max_group=256, max_lanes=1 << 12, spread_posterior=False, pixel_context=False),
    2: Version(2, max_group=1024, max_lanes=1 << 16, spread_posterior=True, pixel_context=False),
    3: Version(3, max_group=1024, max_lanes=1 << 16, spread_posterior=True, pixel_context=True),
    4: Version(4, max_group=1024, max_lanes=1 << 16, spread_posterior=True, pixel_context=True, fallbacks=True),
    5: Version(5, max_group=1024, max_lanes=1 << 16, spread_posterior=True, pixel_context=True, fallbacks=True, scale_offsets=True),
    6: Version(6, max_group=1024, max_lanes=1 << 16, spread_posterior=True, pixel_context=True, fallbacks=True, scale_offsets=True,
               smooth_blends=True),
}
"""Every version this reader decodes."""
VERSION = VERSIONS[6]
"""The version this writer writes."""

METHODS = ("bitswap", "bbans")
"""Bits-back schemes, in header order: Bit-Swap (recursive) and BB-ANS."""
FALLBACKS = ("raw", "png", "webp")
"""Classical methods (version 4 on), in header order after :data:`METHODS`: the pixels stored
as they are, PNG, and WebP lossless, each frame a complete file of its format."""
CODING_METHODS = METHODS + FALLBACKS
"""Every method a stream may be coded with, in header order."""
AUTO = "auto"
"""The method that lets the encoder pick the smallest of Bit-Swap and the classical methods."""
MAX_METADATA_BYTES = 1 << 20
"""Most bytes of metadata (keys and values) one stream may carry."""
SCALE_OFFSET_RANGE = range(-128, 128)
"""A log-scale offset is a signed byte: up to 2 nats (a factor of 7.4) sharper or wider."""
BLEND_WEIGHT_BITS = 4
"""A smooth-area blend's weight is in sixteenths."""
BLEND_LEVELS = 9
"""A smooth-area blend's threshold is ``2**(level - 1)`` for a level of 1 to this (256: everywhere)."""


def smooth_blend(code: int) -> tuple[int, int] | None:
    """(threshold, weight in sixteenths) of a smooth-area blend byte (version 6), or None for 0
    (no blend): its high nibble is the threshold's level, its low nibble the weight minus one.
    Where a pixel's decoded neighbours (two or more) lie within the threshold of each other, its
    predicted mean moves by ``weight / 16`` of the way to their average. Raises ValueError for a
    byte that is neither."""
    if code == 0:
        return None
    level, weight = code >> BLEND_WEIGHT_BITS, (code & ((1 << BLEND_WEIGHT_BITS) - 1)) + 1
    if not 1 <= level <= BLEND_LEVELS or code > 255:
        raise ValueError(f"invalid smooth-area blend {code}")
    return 1 << (level - 1), weight


def blend_code(threshold_level: int, weight: int) -> int:
    """The byte of a smooth-area blend (:func:`smooth_blend`)."""
    return (threshold_level << BLEND_WEIGHT_BITS) | (weight - 1)


def check_method(method: object) -> str:
    """``method`` if it is :data:`AUTO` or in :data:`CODING_METHODS`, else an
    :class:`InvalidOptionError` naming them."""
    if method != AUTO and method not in CODING_METHODS:
        raise InvalidOptionError(f"unknown method {method!r}: choose one of {', '.join((AUTO, *CODING_METHODS))}")
    return method  # type: ignore[return-value]


@dataclass(frozen=True)
class Plane:
    """Consecutive channels of an image coded by one model."""

    first: int
    channels: int

    @property
    def slice(self) -> slice:
        return slice(self.first, self.first + self.channels)


@dataclass(frozen=True)
class Mode:
    """An 8-bit image mode (Pillow's names) and how its channels split into coded planes.

    Alpha is a plane of its own, coded by a grey model after the colour planes.
    """

    name: str
    planes: tuple[Plane, ...]

    @property
    def channels(self) -> int:
        return sum(plane.channels for plane in self.planes)


MODES = {
    mode.name: mode
    for mode in (
        Mode("L", (Plane(0, 1),)),
        Mode("LA", (Plane(0, 1), Plane(1, 1))),
        Mode("RGB", (Plane(0, 3),)),
        Mode("RGBA", (Plane(0, 3), Plane(3, 1))),
    )
}
"""Modes by name, in header order (the header stores the index)."""
MODE_BY_CHANNELS = {mode.channels: mode for mode in MODES.values()}
"""The mode of an array with this many channels (1 to 4)."""


def coded_mode(mode: str, grey_colour: bool = False, constant_alpha: bool = False) -> Mode:
    """The mode whose planes a stream of ``mode`` codes: a grey colour plane (R = G = B) is
    coded as one channel, and a constant alpha plane not at all (version 4 on)."""
    colour = 1 if grey_colour or mode in ("L", "LA") else 3
    alpha = mode in ("LA", "RGBA") and not constant_alpha
    return MODE_BY_CHANNELS[colour + alpha]


@dataclass
class StreamPlan:
    """How a stream's patches are coded: what the encoder decides and the decoder follows.

    The patches of all planes form one chain (frames in order, first planes,
    then second planes). The first ``seed_patches`` are deflated into a seed of
    ``seed_length`` bytes at the bottom of the ANS tail; the rest are coded in
    groups of ``group_sizes`` patches, ``lanes_added`` lanes being created
    before each. ``scale_offsets`` (version 5 on) has, for each of the
    stream's models in header order, the log-scale offset (in log-scale code
    units, 1/64 of a nat) added to the pixels' distributions at each step of
    its likelihood, or no offsets: the pixels are coded as the model says.
    ``smooth_blends`` (version 6 on) has, likewise, a smooth-area blend byte
    (:func:`smooth_blend`) per step, or none.
    """

    method: str
    seed_patches: int = 1
    seed_length: int = 0
    group_sizes: list[int] = field(default_factory=list)
    lanes_added: list[int] = field(default_factory=list)
    scale_offsets: list[tuple[int, ...]] = field(default_factory=list)
    smooth_blends: list[tuple[int, ...]] = field(default_factory=list)
    version: Version = VERSION
