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


VERSIONS = {
    1: Version(1, max_group=256, max_lanes=1 << 12, spread_posterior=False, pixel_context=False),
    2: Version(2, max_group=1024, max_lanes=1 << 16, spread_posterior=True, pixel_context=False),
    3: Version(3, max_group=1024, max_lanes=1 << 16, spread_posterior=True, pixel_context=True),
}
"""Every version this reader decodes."""
VERSION = VERSIONS[3]
"""The version this writer writes."""

METHODS = ("bitswap", "bbans")
"""Bits-back schemes, in header order: Bit-Swap (recursive) and BB-ANS."""


def check_method(method: object) -> str:
    """``method`` if it is a known bits-back scheme, else an :class:`InvalidOptionError` naming them."""
    if method not in METHODS:
        raise InvalidOptionError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")
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


@dataclass
class StreamPlan:
    """How a stream's patches are coded: what the encoder decides and the decoder follows.

    The patches of all planes form one chain (frames in order, first planes,
    then second planes). The first ``seed_patches`` are deflated into a seed of
    ``seed_length`` bytes at the bottom of the ANS tail; the rest are coded in
    groups of ``group_sizes`` patches, ``lanes_added`` lanes being created
    before each.
    """

    method: str
    seed_patches: int = 1
    seed_length: int = 0
    group_sizes: list[int] = field(default_factory=list)
    lanes_added: list[int] = field(default_factory=list)
    version: Version = VERSION
