"""Exceptions raised by bitswap-plugin.

Every error a user can provoke with bad input is a :class:`BitSwapError`, which
subclasses :class:`ValueError`, so ``except ValueError`` keeps working for
callers that do not know this package.
"""


class BitSwapError(ValueError):
    """Base class of all errors raised for bad input or bad files."""


class InvalidImageError(BitSwapError):
    """The array or image given to the encoder cannot be coded (dtype, shape, mode)."""


class InvalidOptionError(BitSwapError):
    """An option has a value this version does not know (a method, a layout, a configuration)."""


class CorruptFileError(BitSwapError):
    """A .bsw stream is truncated, damaged, or not a .bsw stream at all."""


class TruncatedFileError(CorruptFileError):
    """A .bsw stream ends before its header or payload does (an incomplete download or copy)."""


class UnsupportedFormatError(BitSwapError):
    """A .bsw stream uses a format version or feature this version cannot read."""


class ModelNotFoundError(BitSwapError):
    """The model a stream or a call names is not installed (or its hash differs)."""


class ImageTooLargeError(BitSwapError):
    """A header or an array exceeds the pixel limit (a decompression-bomb guard)."""


class DeviceError(BitSwapError):
    """The requested device is not one Bit-Swap codes on (cpu, cuda), or does not exist here."""
