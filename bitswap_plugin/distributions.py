"""Discretized distributions with integer-exact cumulative frequencies.

An entropy model here is a *family* with one parameter per symbol (as in
constriction): ``DiscretizedLogistic(mean, log_scale, num_bins)`` describes a
whole tensor of symbols at once, each with its own integer mean and log-scale
codes (see :mod:`bitswap_plugin.fixedpoint`). It answers the two questions an
ANS coder asks, for any slice of its symbols:

* :meth:`ranges` — the (start, frequency) interval of given symbols;
* :meth:`search` — which symbol owns a given cumulative frequency.

Bin ``k`` is centred at ``k`` (in bins); the edge between bins ``k-1`` and
``k`` sits at ``k - 0.5``. The first and last bins are open-ended, and every
bin gets a frequency of at least 1, so every symbol is encodable.
"""

from __future__ import annotations

import torch

from .fixedpoint import MEAN_FRAC, PRECISION, SIGMOID_LOW, inverse_scale, sigmoid_above_low

TOTAL = 1 << PRECISION


class DiscretizedLogistic:
    """Logistic(mean, scale) discretized to bins ``0 .. num_bins - 1``.

    ``mean`` and ``log_scale`` are int64 codes of any (equal) shape; symbols are
    addressed in flattened (C) order; ``num_bins`` is a power of two. ``known``
    optionally marks symbols the decoder can fill in by itself (padding): they
    code as the identity, cost zero bits, and decode as 0.
    """

    def __init__(
        self,
        mean: torch.Tensor,
        log_scale: torch.Tensor,
        num_bins: int,
        known: torch.Tensor | None = None,
    ) -> None:
        if num_bins < 2 or num_bins > TOTAL // 2 or num_bins & (num_bins - 1):
            raise ValueError(f"num_bins must be a power of two in [2, {TOTAL // 2}]")
        # t(k) = (k - 1/2 - mean) / scale = k * slope - offset, with sigmoid's low end folded in
        inv_scale = inverse_scale(log_scale.reshape(-1))
        self.slope = inv_scale << MEAN_FRAC
        self.offset = (mean.reshape(-1) + (1 << (MEAN_FRAC - 1))) * inv_scale + SIGMOID_LOW
        self.num_bins = num_bins
        self.known = None if known is None else known.reshape(-1)

    def __len__(self) -> int:
        return self.slope.numel()

    def __getitem__(self, index: slice) -> "DiscretizedLogistic":
        part = object.__new__(DiscretizedLogistic)
        part.num_bins = self.num_bins
        for name in ("slope", "offset", "known"):
            value = getattr(self, name)
            setattr(part, name, None if value is None else value[index])
        return part

    def _cdf_interior(self, k: torch.Tensor) -> torch.Tensor:
        """Cumulative frequency below bin ``k`` for ``0 < k < num_bins``."""
        c = sigmoid_above_low(k * self.slope - self.offset)
        return ((c * (TOTAL - self.num_bins)) >> PRECISION) + k

    def cdf(self, k: torch.Tensor) -> torch.Tensor:
        """Cumulative frequency below bin ``k``: 0 at ``k = 0``, TOTAL at ``k = num_bins``."""
        c = self._cdf_interior(k)
        return torch.where(k <= 0, 0, torch.where(k >= self.num_bins, TOTAL, c))

    def ranges(self, symbols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(start, frequency) of each symbol, flattened."""
        symbols = symbols.reshape(-1)
        start = self.cdf(symbols)
        freq = self.cdf(symbols + 1) - start
        if self.known is not None:
            start = torch.where(self.known, 0, start)
            freq = torch.where(self.known, TOTAL, freq)
        return start, freq

    def search(self, cf: torch.Tensor) -> torch.Tensor:
        """The symbol ``k`` with ``cdf(k) <= cf < cdf(k + 1)``, found bit by bit."""
        symbol = torch.zeros_like(cf)
        for bit in reversed(range((self.num_bins - 1).bit_length())):
            candidate = symbol | (1 << bit)
            symbol = torch.where(self._cdf_interior(candidate) <= cf, candidate, symbol)
        if self.known is not None:
            symbol = symbol.masked_fill(self.known, 0)
        return symbol

    def information(self, symbols: torch.Tensor) -> torch.Tensor:
        """Bits each symbol costs, ``-log2(freq / TOTAL)`` (float64, for analysis only)."""
        _, freq = self.ranges(symbols)
        return PRECISION - torch.log2(freq.to(torch.float64))

