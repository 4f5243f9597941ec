"""Discretized distributions with integer-exact cumulative frequencies.

An entropy model here is a *family* with one parameter per symbol (as in
constriction): ``DiscretizedLogistic(mean, log_scale, num_bins)`` describes a
whole tensor of symbols at once, each with its own integer mean and log-scale
codes (see :mod:`bitswap_plugin.fixedpoint`). It answers the two questions an
ANS coder asks, for any slice of its symbols:

* :meth:`ranges` — the (start, frequency) interval of given symbols;
* :meth:`locate` / :meth:`search` — which symbol owns a given cumulative
  frequency (with its interval).

Bin ``k`` is centred at ``k`` (in bins); the edge between bins ``k-1`` and
``k`` sits at ``k - 0.5``. The first and last bins are open-ended, and every
bin gets a frequency of at least 1, so every symbol is encodable.
"""

from __future__ import annotations

import torch

from .fixedpoint import MEAN_FRAC, PRECISION, SIGMOID_LOW, T_FRAC, inverse_scale, sigmoid_above_low

TOTAL = 1 << PRECISION
_T_ONE = float(1 << T_FRAC)
_CORRECTIONS = 2
"""Rounds of +-1 correction of the inverse-CDF guess before falling back to bisection."""


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

    def locate(self, cf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(symbol, start, frequency) of the symbol with ``cdf(k) <= cf < cdf(k + 1)``: what an ANS pop needs.

        A float inverse-CDF guess, checked and corrected with the exact integer
        CDF; lanes the guess misses by more than :data:`_CORRECTIONS` bins (far
        tails, where every bin holds the minimum frequency) fall back to the
        bit-by-bit :meth:`_bisect`. The guess affects speed only, never the result.
        """
        u = (cf.to(torch.float64) + 0.5) / TOTAL
        t = (torch.log(u) - torch.log1p(-u)) * _T_ONE  # logit, in the fixed-point units of k * slope - offset
        guess = torch.floor((t + (self.offset - SIGMOID_LOW).to(torch.float64)) / self.slope.to(torch.float64))
        symbol = guess.nan_to_num(0.0).clamp(0, self.num_bins - 1).to(torch.int64)
        for _ in range(_CORRECTIONS + 1):
            start, end = self.cdf(symbol), self.cdf(symbol + 1)
            low, high = cf < start, cf >= end
            missed = low | high
            if self.known is not None:
                missed &= ~self.known
            if not bool(missed.any()):
                break
            symbol = symbol - low.to(torch.int64) + high.to(torch.int64)
        else:
            symbol = symbol.masked_scatter(missed, self[missed]._bisect(cf[missed]))
            start, end = self.cdf(symbol), self.cdf(symbol + 1)
        if self.known is not None:
            symbol = symbol.masked_fill(self.known, 0)
            start = start.masked_fill(self.known, 0)
            end = torch.where(self.known, TOTAL, end)
        return symbol, start, end - start

    def search(self, cf: torch.Tensor) -> torch.Tensor:
        """The symbol ``k`` with ``cdf(k) <= cf < cdf(k + 1)`` (padding: 0)."""
        return self.locate(cf)[0]

    def _bisect(self, cf: torch.Tensor) -> torch.Tensor:
        """The symbol owning ``cf``, found bit by bit (ignores ``known``)."""
        symbol = torch.zeros_like(cf)
        for bit in reversed(range((self.num_bins - 1).bit_length())):
            candidate = symbol | (1 << bit)
            symbol = torch.where(self._cdf_interior(candidate) <= cf, candidate, symbol)
        return symbol

    def information(self, symbols: torch.Tensor) -> torch.Tensor:
        """Bits each symbol costs, ``-log2(freq / TOTAL)`` (float64, for analysis only)."""
        _, freq = self.ranges(symbols)
        return PRECISION - torch.log2(freq.to(torch.float64))

