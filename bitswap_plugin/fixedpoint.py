"""Integer arithmetic shared by the model and the entropy coder.

Decoding a bits-back stream needs the decoder to rebuild *exactly* the
frequencies the encoder used, on any CPU, GPU, thread count or batch size.
Floats cannot promise that (oneDNN's SSE4.1 and AVX2 kernels disagree in most
outputs), so everything between the pixels and the ANS frequencies is integer:

* network activations and weights are small integers; convolutions accumulate
  them in float32 (or float64) where every partial sum stays below 2**24
  (2**53), so every summation order gives the same exact integer;
* the transcendental functions the distributions need (sigmoid, exp) are
  lookup tables computed with :mod:`decimal`, which rounds correctly and so
  gives the same table everywhere.

Fixed-point conventions used across the package:

* a distribution *mean* is given in bins with :data:`MEAN_FRAC` fractional bits;
* a *log-scale* is the natural log of the scale in bins with
  :data:`LOG_SCALE_FRAC` fractional bits, clamped to
  [:data:`LOG_SCALE_MIN`, :data:`LOG_SCALE_MAX`];
* probabilities have :data:`PRECISION` bits (the ANS precision).
"""

from __future__ import annotations

import decimal
import functools
import threading
from collections.abc import Callable

import torch
import torch.nn.functional as F

PRECISION = 24
"""Bits of probability resolution: frequencies sum to ``2**PRECISION``."""

MEAN_FRAC = 8
LOG_SCALE_FRAC = 6
LOG_SCALE_MIN = -3 << LOG_SCALE_FRAC  # scale e**-3 ~ 0.05 bins
LOG_SCALE_MAX = 15 << (LOG_SCALE_FRAC - 1)  # scale e**7.5 ~ 1800 bins

INV_SCALE_FRAC = 24
SIGMOID_RANGE = 16
"""The sigmoid table spans [-16, 16]; beyond it the CDF is exactly 0 or 1."""
SIGMOID_STEP_BITS = 6
T_FRAC = MEAN_FRAC + INV_SCALE_FRAC
"""Fractional bits of the standardized position t = (edge - mean) / scale."""

LOGIT_FRAC = 8
"""Mixture logits are codes of nats with this many fractional bits."""
LOGIT_MAX = 8 << LOGIT_FRAC
"""Mixture logit codes are clamped to [-LOGIT_MAX, LOGIT_MAX] (weights down to e**-16 of the largest)."""
MIXTURE_WEIGHT_BITS = 16
"""A symbol's mixture weights are integers that sum to ``2**MIXTURE_WEIGHT_BITS``."""

FLOAT32_EXACT_LIMIT = 1 << 24
FLOAT64_EXACT_LIMIT = 1 << 53


def _decimal_context() -> decimal.Context:
    return decimal.Context(prec=40, rounding=decimal.ROUND_HALF_EVEN)


@functools.lru_cache(maxsize=None)
def _sigmoid_table() -> tuple[int, ...]:
    with decimal.localcontext(_decimal_context()):
        one = decimal.Decimal(1)
        step = one / (1 << SIGMOID_STEP_BITS)
        n = 2 * SIGMOID_RANGE << SIGMOID_STEP_BITS
        return tuple(
            int((one / (one + (-(i - n // 2) * step).exp()) * (1 << PRECISION)).to_integral_value())
            for i in range(n + 1)
        )


@functools.lru_cache(maxsize=None)
def _inv_scale_table() -> tuple[int, ...]:
    with decimal.localcontext(_decimal_context()):
        frac = decimal.Decimal(1 << LOG_SCALE_FRAC)
        return tuple(
            int(((-decimal.Decimal(code) / frac).exp() * (1 << INV_SCALE_FRAC)).to_integral_value())
            for code in range(LOG_SCALE_MIN, LOG_SCALE_MAX + 1)
        )


@functools.lru_cache(maxsize=None)
def _exp_table() -> tuple[int, ...]:
    """exp(-d / 2**LOGIT_FRAC) << MIXTURE_WEIGHT_BITS for logit differences d = 0 .. 2 * LOGIT_MAX, rounded."""
    with decimal.localcontext(_decimal_context()):
        frac = decimal.Decimal(1 << LOGIT_FRAC)
        return tuple(int(((-decimal.Decimal(d) / frac).exp() * (1 << MIXTURE_WEIGHT_BITS)).to_integral_value())
                     for d in range(2 * LOGIT_MAX + 1))


CODE_LENGTH_FRAC = 16
"""Fractional bits of :func:`code_length`."""
_LOG2_MANTISSA_BITS = 12


@functools.lru_cache(maxsize=None)
def _log2_table() -> tuple[int, ...]:
    """-log2(m) << CODE_LENGTH_FRAC for the midpoints m of the 2**12 mantissa bins of [1/2, 1), rounded."""
    with decimal.localcontext(_decimal_context()):
        bins = 1 << _LOG2_MANTISSA_BITS
        ln2 = decimal.Decimal(2).ln()
        return tuple(
            int((-(decimal.Decimal(2 * (bins + i) + 1) / (4 * bins)).ln() / ln2 * (1 << CODE_LENGTH_FRAC)).to_integral_value())
            for i in range(bins)
        )


_TABLES: dict[tuple[str, torch.device], torch.Tensor] = {}
_TABLES_LOCK = threading.Lock()


def _sigmoid_segments() -> list[tuple[int, int]]:
    """The sigmoid as linear segments ``(slope, intercept << _KNOT_SHIFT)``, one per knot.

    With ``u`` in segment ``i = u >> _KNOT_SHIFT`` the interpolated value
    ``v[i] + ((slope * (u - i << _KNOT_SHIFT)) >> _KNOT_SHIFT)`` equals
    ``(slope * u + intercept << _KNOT_SHIFT) >> _KNOT_SHIFT`` with
    ``intercept = v[i] - slope * i``: one gather and one multiply-add. The knots
    run from 0 at -16 - 1/64 to ``2**PRECISION`` at 16 + 1/64 (a final flat
    segment holds that value).
    """
    values = (0,) + _sigmoid_table() + (1 << PRECISION, 1 << PRECISION)
    return [(w - v, (v - (w - v) * i) << _KNOT_SHIFT) for i, (v, w) in enumerate(zip(values, values[1:]))]


def _table(name: str, device: torch.device) -> torch.Tensor:
    key = (name, torch.device(device))
    table = _TABLES.get(key)
    if table is None:
        values = {"sigmoid": _sigmoid_segments, "inv_scale": _inv_scale_table, "log2": _log2_table, "exp": _exp_table}[name]()
        table = torch.tensor(values, dtype=torch.int64, device=device)
        with _TABLES_LOCK:
            table = _TABLES.setdefault(key, table)
    return table


def inverse_scale(log_scale: torch.Tensor) -> torch.Tensor:
    """exp(-log_scale) with :data:`INV_SCALE_FRAC` fractional bits, for clamped log-scale codes."""
    table = _table("inv_scale", log_scale.device)
    return table[log_scale.clamp(LOG_SCALE_MIN, LOG_SCALE_MAX) - LOG_SCALE_MIN]


def mixture_weights(logits: torch.Tensor) -> torch.Tensor:
    """Integer weights proportional to exp(logit) along dim 0 (components), summing to
    ``2**MIXTURE_WEIGHT_BITS`` per symbol, for logit codes (:data:`LOGIT_FRAC`; clamped first)."""
    logits = logits.clamp(-LOGIT_MAX, LOGIT_MAX)
    return normalised_weights(_table("exp", logits.device)[logits.amax(0) - logits])


def normalised_weights(weights: torch.Tensor) -> torch.Tensor:
    """Non-negative integer weights (components along dim 0, a positive sum below ``2**46`` per
    symbol) rescaled to sum to ``2**MIXTURE_WEIGHT_BITS``: each floored, the remainder (less than the
    number of components) to component 0. Exact integer division, the same on every device."""
    scaled = torch.div(weights << MIXTURE_WEIGHT_BITS, weights.sum(0), rounding_mode="floor")
    scaled[0] += (1 << MIXTURE_WEIGHT_BITS) - scaled.sum(0)
    return scaled


def code_length(freq: torch.Tensor) -> torch.Tensor:
    """-log2(freq / 2**PRECISION) of frequencies in [1, 2**PRECISION], in units of
    2**-CODE_LENGTH_FRAC bits (int64), within 2**-12 relative of the mantissa: integers from a table
    and an exact float64 exponent, so their sums are the same on every machine and thread count
    (for the encoder's choices; the coder itself never needs a logarithm)."""
    mantissa, exponent = torch.frexp(freq.to(torch.float64))  # freq = mantissa * 2**exponent, mantissa in [1/2, 1)
    index = (mantissa * (2 << _LOG2_MANTISSA_BITS)).to(torch.int64) - (1 << _LOG2_MANTISSA_BITS)
    table = _table("log2", freq.device)
    return ((PRECISION - exponent.to(torch.int64)) << CODE_LENGTH_FRAC) + table[index]


_KNOT_SHIFT = T_FRAC - SIGMOID_STEP_BITS
SIGMOID_LOW = -((SIGMOID_RANGE << SIGMOID_STEP_BITS) + 1) << _KNOT_SHIFT
"""The t below which :func:`sigmoid` is 0."""
SIGMOID_SPAN = -2 * SIGMOID_LOW
"""The t - SIGMOID_LOW above which :func:`sigmoid` is ``2**PRECISION``."""


def sigmoid(t: torch.Tensor) -> torch.Tensor:
    """sigmoid(t) * 2**PRECISION for t with :data:`T_FRAC` fractional bits.

    Piecewise linear through a 1/64-step table of correctly rounded values on
    [-16, 16], reaching exactly 0 at -16 - 1/64 and ``2**PRECISION`` at
    16 + 1/64; constant beyond. Monotone non-decreasing in t.
    """
    return sigmoid_above_low(t - SIGMOID_LOW)


def sigmoid_above_low(u: torch.Tensor) -> torch.Tensor:
    """:func:`sigmoid` of ``u + SIGMOID_LOW``: lets callers fold the offset into their own constants."""
    u = u.clamp(0, SIGMOID_SPAN)
    segment = _table("sigmoid", u.device).index_select(0, (u >> _KNOT_SHIFT).reshape(-1)).view(*u.shape, 2)
    return torch.addcmul(segment[..., 1], segment[..., 0], u) >> _KNOT_SHIFT


def requantize(acc: torch.Tensor, bias: torch.Tensor, multiplier: torch.Tensor, shift: int) -> torch.Tensor:
    """floor((acc + bias) * multiplier / 2**shift) in int64, per channel (dim 1)."""
    view = (1, -1) + (1,) * (acc.dim() - 2)
    return ((acc + bias.view(view)) * multiplier.view(view)) >> shift


def _conv_reference(x: torch.Tensor, weight: torch.Tensor, padding: int) -> torch.Tensor:
    """Convolution as im2col + float64 matmul: exact for integer operands below 2**53."""
    n, _, h, w = x.shape
    cols = F.unfold(x.to(torch.float64), weight.shape[-2:], padding=padding)
    out = weight.to(torch.float64).reshape(weight.shape[0], -1) @ cols
    return out.reshape(n, weight.shape[0], h + 2 * padding - weight.shape[-2] + 1, w + 2 * padding - weight.shape[-1] + 1)


_FAST_CONV_OK: dict[tuple, bool] = {}


def _fast_conv(x: torch.Tensor, weight: torch.Tensor, padding: int) -> torch.Tensor:
    """float32 ``conv2d`` in channels-last layout (oneDNN's fastest direct kernels on CPU)."""
    x = x.to(torch.float32, memory_format=torch.channels_last)
    return F.conv2d(x, weight.to(torch.float32, memory_format=torch.channels_last), padding=padding)


def _fast_conv_is_exact(device: torch.device, shape: tuple) -> bool:
    """Probe once per layer shape whether :func:`_fast_conv` here sums exactly.

    On CPU PyTorch runs float32 convolutions through oneDNN's direct algorithm,
    which only adds exact products, so results are exact while partial sums stay
    below 2**24. A reduced-precision math mode (bf16/TF32) or a Winograd/FFT
    backend would break that; the probe catches it and we fall back to the
    float64 reference path.
    """
    key = (device.type, shape)
    ok = _FAST_CONV_OK.get(key)
    if ok is None:
        out_ch, in_ch, kh, kw = shape
        gen = torch.Generator().manual_seed(1234)
        weight = torch.randint(-255, 256, (out_ch, in_ch, kh, kw), generator=gen).float()
        budget = (FLOAT32_EXACT_LIMIT - 1) // max(1, int(weight.abs().sum((1, 2, 3)).max()))
        x = torch.randint(-budget, budget + 1, (2, in_ch, 16, 16), generator=gen).float()
        fast = _fast_conv(x.to(device), weight.to(device), kh // 2).cpu().double()
        ok = bool(torch.equal(fast, _conv_reference(x, weight, kh // 2)))
        _FAST_CONV_OK[key] = ok
    return ok


DIGIT = 256
"""Inputs too wide for an exact float32 convolution are convolved in base-``DIGIT`` digits."""


def by_digits(x: torch.Tensor, conv: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``conv(x)`` for a linear ``conv`` of integer-valued ``x`` with ``|x| < 255 * 256``, as
    ``256 * conv(high) + conv(low)`` summed in float64, where each digit is below 256 in magnitude
    (float32 holds the digits exactly)."""
    high = x.to(torch.float32, copy=True)
    low = torch.remainder(high, DIGIT)
    high.sub_(low).div_(DIGIT)
    return conv(high).double().mul_(DIGIT).add_(conv(low).double())


def exact_conv2d(x: torch.Tensor, weight: torch.Tensor, weight_sum: int, in_max: int) -> torch.Tensor:
    """Same-padded convolution of integer-valued tensors, exact, as float32 (fast path) or float64.

    ``weight_sum`` is the largest ``sum(|w|)`` of an output channel and
    ``in_max`` the largest ``|x|``. float32 is used only where no partial sum
    can reach 2**24: on the whole input, or on its two base-256 digits
    (``in_max`` below 255 * 256), whose convolutions are summed in float64.
    """
    padding = weight.shape[-1] // 2
    fast = x.device.type == "cpu" and _fast_conv_is_exact(x.device, tuple(weight.shape))
    if fast and weight_sum * in_max < FLOAT32_EXACT_LIMIT:
        return _fast_conv(x, weight, padding)
    if fast and weight_sum * (DIGIT - 1) < FLOAT32_EXACT_LIMIT and in_max < DIGIT * (DIGIT - 1):
        return by_digits(x, lambda digits: _fast_conv(digits, weight, padding))
    if weight_sum * in_max >= FLOAT64_EXACT_LIMIT:
        raise OverflowError("convolution bound exceeds exact float64 range")
    return _conv_reference(x, weight, padding)
