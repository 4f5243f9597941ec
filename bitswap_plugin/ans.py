"""Vectorized rANS stack coder in torch (CPU or CUDA int64 tensors).

The message is a set of *lanes* — one rANS head per lane, each in
``[2**31, 2**63)`` — on top of a single shared *tail*, a stack of 32-bit
words. Coding a tensor of ``N`` symbols with ``L`` lanes takes ``ceil(N / L)``
steps; step ``s`` codes symbols ``s*L .. s*L+L-1`` on lanes ``0 .. L-1`` in
parallel. Popping runs the steps in the opposite order, so ``pop`` exactly
undoes ``push`` and ``push`` exactly undoes ``pop`` — which is what bits-back
coding needs: it pops latents from bits that really are earlier image data.

Words a renormalizing lane writes go onto the tail in lane order; a pop takes
them back in the same order. Popping below the bottom of the tail reads
deterministic *phantom* words: the result is well defined, but the bits are not
stored, so they are not "got back" (the start-up cost of bits-back coding).

A *spread* push or pop passes the head's low ``precision`` bits through a
fixed bijection (multiplication by an odd constant near ``2**precision / phi``)
before they are read as a cumulative frequency. Rate and exactness are
unchanged; what changes is what a pop reads right after a push. Without it, the
low bits a push leaves are in the pushed symbol's interval, so a pop that
follows on the same lane reads a value confined to that interval and decodes a
skewed sample (bits-back coding's "drift"); spread, they scatter evenly over
the whole range. Bit-Swap spreads its posterior pushes and pops, which is what
lets a lane code as few as 16 latents per group without a rate penalty.

Lanes are created from data: :meth:`AnsCoder.grow` turns tail words into new
heads (``2**32 + word``), costing under a bit each, and the final heads are
serialized with a length prefix, so a lane costs a few bits rather than the
64 a raw head would.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .errors import CorruptFileError
from .fixedpoint import PRECISION

if TYPE_CHECKING:
    from .distributions import EntropyModel

HEAD_MIN = 1 << 31
WORD_BITS = 32
WORD_MASK = (1 << WORD_BITS) - 1
_LANE_BASE = 1 << WORD_BITS
_HEAD_LENGTH_BITS = 5
_GOLDEN_FRACTION = 0.6180339887498949


def _spread_multiplier(precision: int) -> int:
    """The odd multiplier of spread coding: near ``2**precision / phi``, whose multiples of any
    run of consecutive integers are evenly spread modulo ``2**precision`` (three-gap theorem)."""
    return int((1 << precision) * _GOLDEN_FRACTION) | 1


def _phantom_words(first: int, count: int, device: torch.device) -> torch.Tensor:
    """Words 'below the bottom' of the tail: a fixed, well-spread Weyl sequence."""
    index = torch.arange(first, first + count, dtype=torch.int64, device=device)
    return (index * 0x9E3779B9 + 0x7F4A7C15) & WORD_MASK


class AnsCoder:
    """A rANS message: lane heads plus a shared tail stack of 32-bit words.

    The encoder starts from an empty coder, pushes and pops, and serializes with
    :meth:`to_bytes`; the decoder rebuilds it with :meth:`from_bytes` and runs
    the mirror sequence of operations.
    """

    def __init__(self, device: torch.device | str = "cpu", precision: int = PRECISION, bottomless: bool = True) -> None:
        if not 1 <= precision <= 31:
            raise ValueError("precision must be in [1, 31]")
        self.device = torch.device(device)
        self.precision = precision
        self.bottomless = bottomless
        """Whether pops below the bottom of the tail read phantom words (an encoder's start-up).
        A decoder of a stream sets it False: it pops only words its encoder pushed, so reading
        below the bottom means damage (a CorruptFileError, raised at once)."""
        self._spread = _spread_multiplier(precision)
        self._unspread = pow(self._spread, -1, 1 << precision)
        self.heads = torch.empty(0, dtype=torch.int64, device=self.device)
        self._tail = torch.empty(1024, dtype=torch.int64, device=self.device)
        self.tail_length = 0
        self.phantom_words = 0
        """How many words were popped from below the bottom of the tail."""

    @property
    def num_lanes(self) -> int:
        return self.heads.numel()

    @property
    def tail(self) -> torch.Tensor:
        return self._tail[: self.tail_length]

    # -- the tail stack -------------------------------------------------

    def push_words(self, words: torch.Tensor) -> None:
        """Lay raw 32-bit words (int64 values) on top of the tail, last one on top."""
        count = words.numel()
        needed = self.tail_length + count
        if needed > self._tail.numel():
            grown = torch.empty(max(needed, 2 * self._tail.numel()), dtype=torch.int64, device=self.device)
            grown[: self.tail_length] = self._tail[: self.tail_length]
            self._tail = grown
        self._tail[self.tail_length : needed] = words
        self.tail_length = needed

    def _pop_words(self, count: int) -> torch.Tensor:
        real = min(count, self.tail_length)
        words = self._tail[self.tail_length - real : self.tail_length]
        self.tail_length -= real
        missing = count - real
        if missing and not self.bottomless:
            raise CorruptFileError("corrupt stream: decoding reads past the bottom of the ANS tail")
        if missing:
            phantom = _phantom_words(self.phantom_words, missing, self.device).flip(0)
            self.phantom_words += missing
            words = torch.cat([phantom, words])
        return words

    # -- lanes ----------------------------------------------------------

    def grow(self, count: int) -> None:
        """Add ``count`` lanes whose heads are made of the top tail words."""
        if count > 0:
            self.heads = torch.cat([self.heads, self._pop_words(count) + _LANE_BASE])

    def shrink(self, count: int) -> None:
        """Undo :meth:`grow`: turn the last ``count`` heads back into tail words."""
        if count <= 0:
            return
        if count > self.num_lanes:
            raise CorruptFileError("corrupt stream: lane count underflow")
        words = self.heads[self.num_lanes - count :] - _LANE_BASE
        if bool(((words < 0) | (words > WORD_MASK)).any()):
            raise CorruptFileError("corrupt stream: a lane does not end in its initial state")
        self.heads = self.heads[: self.num_lanes - count]
        self.push_words(words)

    # -- coding ---------------------------------------------------------

    def _steps(self, count: int) -> range:
        """The first symbol of each step (a lazy range: a stream may claim millions of steps)."""
        if count and not self.num_lanes:
            raise ValueError("the coder has no lanes; call grow() first")
        return range(0, count, self.num_lanes or 1)

    def push(self, starts: torch.Tensor, freqs: torch.Tensor, spread: bool = False) -> None:
        """Encode symbols given by their (start, frequency) intervals, flattened.

        Per step: a lane whose head reaches ``freq << (63 - precision)`` first
        emits its low word, then ``head -> (head // freq << precision) + head % freq + start``,
        written as ``head + start + (head // freq) * (2**precision - freq)``; ``spread``
        maps the new low bits through the spread bijection's inverse (see the module docstring).
        """
        starts, freqs = starts.reshape(-1), freqs.reshape(-1)
        prec = self.precision
        mask = (1 << prec) - 1
        at_least = ((freqs - 1) << (63 - prec)) | ((1 << (63 - prec)) - 1)  # head > this: emit (no overflow at freq = 2**prec)
        complement = (1 << prec) - freqs
        count, lanes = starts.numel(), self.num_lanes
        for lo in self._steps(count):
            hi = min(lo + lanes, count)
            head = self.heads[: hi - lo]
            emit = head > at_least[lo:hi]
            self.push_words(head.masked_select(emit) & WORD_MASK)
            head = torch.where(emit, head >> WORD_BITS, head)
            if spread:
                quotient = head // freqs[lo:hi]
                low = torch.addcmul(head + starts[lo:hi], quotient, freqs[lo:hi], value=-1).mul_(self._unspread).bitwise_and_(mask)
                torch.add(low, quotient << prec, out=self.heads[: hi - lo])
            else:
                torch.addcmul(head + starts[lo:hi], head // freqs[lo:hi], complement[lo:hi], out=self.heads[: hi - lo])

    def pop(self, model: EntropyModel, spread: bool = False) -> torch.Tensor:
        """Decode ``len(model)`` symbols of an entropy-model family (:class:`~.distributions.EntropyModel`);
        returns them flattened. Undoes :meth:`push` with the same ``spread``."""
        prec = self.precision
        mask = (1 << prec) - 1
        count = len(model)
        symbols = torch.empty(count, dtype=torch.int64, device=self.device)
        lanes = self.num_lanes
        for lo in reversed(self._steps(count)):
            hi = min(lo + lanes, count)
            head = self.heads[: hi - lo]
            cf = (head & mask).mul_(self._spread).bitwise_and_(mask) if spread else head & mask
            symbols[lo:hi], start, freq = model[lo:hi].locate(cf)
            torch.addcmul(cf - start, freq, head >> prec, out=head)
            need = (head < HEAD_MIN).nonzero()[:, 0]
            if need.numel():
                head.index_copy_(0, need, (head.index_select(0, need) << WORD_BITS) | self._pop_words(need.numel()))
        return symbols

    # -- size and serialization ----------------------------------------

    def bit_length(self) -> int:
        """Exact size in bits of :meth:`to_bytes` without its byte padding."""
        lengths = _bit_lengths(self.heads)
        return WORD_BITS * self.tail_length + int((lengths - 1 + _HEAD_LENGTH_BITS).sum())

    def to_bytes(self) -> tuple[int, bytes, bytes]:
        """``(num_lanes, packed heads, tail words)`` — the tail as little-endian uint32."""
        heads = self.heads.cpu().tolist()
        packed = 0
        nbits = 0
        for head in heads:
            length = head.bit_length()
            packed |= (length - WORD_BITS) << nbits
            nbits += _HEAD_LENGTH_BITS
            packed |= (head - (1 << (length - 1))) << nbits
            nbits += length - 1
        head_bytes = packed.to_bytes((nbits + 7) // 8, "little")
        return len(heads), head_bytes, self.tail.cpu().numpy().astype("<u4").tobytes()

    @classmethod
    def from_bytes(
        cls,
        num_lanes: int,
        head_bytes: bytes,
        tail_bytes: bytes,
        device: torch.device | str = "cpu",
        precision: int = PRECISION,
        bottomless: bool = True,
    ) -> "AnsCoder":
        """Rebuild a coder from :meth:`to_bytes` output; raises CorruptFileError on bad data."""
        import numpy as np

        if num_lanes < 0:
            raise CorruptFileError("corrupt stream: negative lane count")
        coder = cls(device, precision, bottomless)
        packed = int.from_bytes(head_bytes, "little")
        heads = []
        offset = 0
        total = 8 * len(head_bytes)
        for _ in range(num_lanes):
            if offset + _HEAD_LENGTH_BITS > total:
                raise CorruptFileError("corrupt stream: lane heads are truncated")
            length = ((packed >> offset) & ((1 << _HEAD_LENGTH_BITS) - 1)) + WORD_BITS
            offset += _HEAD_LENGTH_BITS
            if offset + length - 1 > total or length > 63:
                raise CorruptFileError("corrupt stream: lane heads are truncated")
            heads.append((1 << (length - 1)) | ((packed >> offset) & ((1 << (length - 1)) - 1)))
            offset += length - 1
        if (total - offset) >= 8:
            raise CorruptFileError("corrupt stream: unexpected bytes after the lane heads")
        if len(tail_bytes) % 4:
            raise CorruptFileError("corrupt stream: tail is not a whole number of words")
        coder.heads = torch.tensor(heads, dtype=torch.int64, device=coder.device)
        words = torch.from_numpy(np.frombuffer(tail_bytes, dtype="<u4").astype(np.int64))
        coder._tail = words.to(coder.device) if words.numel() else coder._tail
        coder.tail_length = words.numel()
        return coder


def _bit_lengths(values: torch.Tensor) -> torch.Tensor:
    """Bit length of each positive int64 value (exact, integer-only)."""
    lengths = torch.zeros_like(values)
    rest = values.clone()
    for shift in (32, 16, 8, 4, 2, 1):
        big = rest >= (1 << shift)
        lengths += big * shift
        rest = torch.where(big, rest >> shift, rest)
    return lengths + (rest > 0)
