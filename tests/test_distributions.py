"""Tests of :class:`DiscretizedLogistic` and the fixed-point lookup tables behind it."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bitswap_plugin.distributions import TOTAL, DiscretizedLogistic, _radix_search
from bitswap_plugin.fixedpoint import (
    CODE_LENGTH_FRAC,
    INV_SCALE_FRAC,
    LOG_SCALE_FRAC,
    LOG_SCALE_MAX,
    LOG_SCALE_MIN,
    MEAN_FRAC,
    SIGMOID_RANGE,
    SIGMOID_STEP_BITS,
    T_FRAC,
    code_length,
    inverse_scale,
    sigmoid,
)

SEEDS = st.integers(0, 2**32 - 1)
BINS = st.sampled_from([1 << b for b in range(1, 11)])
KNOT = 1 << (T_FRAC - SIGMOID_STEP_BITS)
"""Distance between sigmoid table knots (1/64) in T_FRAC fixed point."""
EDGE = (SIGMOID_RANGE << SIGMOID_STEP_BITS) + 1
"""Knot index of -16 - 1/64 and 16 + 1/64, where the sigmoid reaches 0 and 2**PRECISION."""


def corner_params(num_bins: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every combination of extreme means (the model clamps them to [-1, num_bins] bins) and log-scales."""
    means = torch.tensor([-(1 << MEAN_FRAC), 0, (num_bins - 1) << (MEAN_FRAC - 1), num_bins << MEAN_FRAC])
    log_scales = torch.tensor([LOG_SCALE_MIN - 1000, LOG_SCALE_MIN, LOG_SCALE_MIN + 1, 0, LOG_SCALE_MAX - 1, LOG_SCALE_MAX, LOG_SCALE_MAX + 1000])
    return means.repeat_interleave(len(log_scales)), log_scales.repeat(len(means))


def random_params(gen: torch.Generator, count: int, num_bins: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Means and log-scales uniform over their whole clamp ranges."""
    mean = torch.randint(-(1 << MEAN_FRAC), (num_bins << MEAN_FRAC) + 1, (count,), generator=gen)
    return mean, torch.randint(LOG_SCALE_MIN, LOG_SCALE_MAX + 1, (count,), generator=gen)


def repeated(mean: torch.Tensor, log_scale: torch.Tensor, num_bins: int, width: int) -> DiscretizedLogistic:
    """A family holding each parameter ``width`` times in a row, to evaluate a table per parameter at once."""
    return DiscretizedLogistic(mean.repeat_interleave(width), log_scale.repeat_interleave(width), num_bins)


def cdf_table(mean: torch.Tensor, log_scale: torch.Tensor, num_bins: int) -> torch.Tensor:
    """cdf(k) for k = 0 .. num_bins, one row per parameter."""
    width = num_bins + 1
    model = repeated(mean, log_scale, num_bins, width)
    return model.cdf(torch.arange(width).repeat(len(mean))).view(-1, width)


# -- DiscretizedLogistic ----------------------------------------------------------


@pytest.mark.parametrize("num_bins", [1 << b for b in range(1, 15)])
def test_corner_frequencies_partition_total(num_bins: int) -> None:
    mean, log_scale = corner_params(num_bins)
    check_partition(mean, log_scale, num_bins)


@settings(max_examples=20, deadline=None)
@given(seed=SEEDS, num_bins=BINS)
def test_random_frequencies_partition_total(seed: int, num_bins: int) -> None:
    mean, log_scale = random_params(torch.Generator().manual_seed(seed), 64, num_bins)
    check_partition(mean, log_scale, num_bins)


def check_partition(mean: torch.Tensor, log_scale: torch.Tensor, num_bins: int) -> None:
    """Every bin has frequency >= 1, the intervals tile [0, TOTAL) in order, and the cdf is strictly increasing."""
    model = repeated(mean, log_scale, num_bins, num_bins)
    start, freq = model.ranges(torch.arange(num_bins).repeat(len(mean)))
    start, freq = start.view(-1, num_bins), freq.view(-1, num_bins)
    assert int(freq.min()) >= 1
    assert (freq.sum(1) == TOTAL).all()
    assert (start[:, 0] == 0).all()
    assert torch.equal(start[:, 1:], freq.cumsum(1)[:, :-1])
    table = cdf_table(mean, log_scale, num_bins)
    assert (table[:, 0] == 0).all() and (table[:, -1] == TOTAL).all()
    assert (table.diff(dim=1) > 0).all()


def test_known_symbols_are_identity_intervals() -> None:
    known = torch.tensor([True, False, True])
    model = DiscretizedLogistic(torch.tensor([0, 0, 100]), torch.tensor([0, 0, 0]), 16, known)
    start, freq = model.ranges(torch.tensor([7, 0, 15]))
    assert start[known].tolist() == [0, 0] and freq[known].tolist() == [TOTAL, TOTAL]
    assert model.search(torch.tensor([TOTAL - 1, 0, 12345])).tolist() == [0, 0, 0]


@settings(max_examples=15, deadline=None)
@given(seed=SEEDS, num_bins=BINS, corners=st.booleans())
def test_search_matches_brute_force(seed: int, num_bins: int, corners: bool) -> None:
    """search(cf) is the number of interior bin boundaries cdf(k) <= cf, for random cfs, 0, TOTAL-1 and boundaries ±1."""
    gen = torch.Generator().manual_seed(seed)
    mean, log_scale = corner_params(num_bins) if corners else random_params(gen, 8, num_bins)
    table = cdf_table(mean, log_scale, num_bins)
    interior = table[:, 1:num_bins]
    ends = torch.tensor([0, TOTAL - 1]).expand(len(mean), 2)
    cfs = torch.cat([ends, interior, interior - 1, torch.randint(0, TOTAL, (len(mean), 64), generator=gen)], 1)
    expected = (interior[:, None, :] <= cfs[:, :, None]).sum(-1)
    model = repeated(mean, log_scale, num_bins, cfs.shape[1])
    symbols, starts, freqs = model.locate(cfs.reshape(-1))
    assert torch.equal(symbols.view_as(cfs), expected)
    assert torch.equal(_radix_search(model, cfs.reshape(-1))[0], symbols)  # guess-and-check agrees with the search
    want_starts, want_freqs = model.ranges(symbols)
    assert torch.equal(starts, want_starts) and torch.equal(freqs, want_freqs)


def test_quantized_pmf_close_to_float_logistic() -> None:
    """Total variation to the exact discretized logistic is <= 1e-3 + 2 * num_bins / 2**24.

    The sigmoid is linear between knots h = 1/64 apart; its interpolation error
    e(t) varies by at most about (h / 4) * integral |sigmoid''| = h / 8 ~ 2e-3
    over the whole line, which bounds sum_k |e(edge_k+1) - e(edge_k)|, i.e.
    2 * TV, by 2e-3. Flooring each cdf and the 1-per-bin minimum move at most
    2 * num_bins / 2**24 more. Checked over the whole parameter clamp range
    (observed maxima ~5e-4 at 1024 bins, 3e-6 at 2 bins).
    """
    gen = torch.Generator().manual_seed(7)
    for num_bins in (2, 16, 256, 1024):
        mean, log_scale = random_params(gen, 200, num_bins)
        corner_mean, corner_scale = corner_params(num_bins)
        mean, log_scale = torch.cat([mean, corner_mean]), torch.cat([log_scale, corner_scale.clamp(LOG_SCALE_MIN, LOG_SCALE_MAX)])
        quantized = cdf_table(mean, log_scale, num_bins).double().diff(dim=1) / TOTAL
        edges = torch.arange(1, num_bins, dtype=torch.float64) - 0.5
        scale = torch.exp(log_scale.double() / (1 << LOG_SCALE_FRAC))
        inner = torch.sigmoid((edges - mean.double()[:, None] / (1 << MEAN_FRAC)) / scale[:, None])
        exact = torch.cat([torch.zeros(len(mean), 1), inner, torch.ones(len(mean), 1)], 1).diff(dim=1)
        tv = 0.5 * (quantized - exact).abs().sum(1)
        assert float(tv.max()) <= 1e-3 + 2 * num_bins / TOTAL, num_bins


# -- fixed-point tables -----------------------------------------------------------


def test_sigmoid_knots_are_correctly_rounded() -> None:
    i = torch.arange(-(SIGMOID_RANGE << SIGMOID_STEP_BITS), (SIGMOID_RANGE << SIGMOID_STEP_BITS) + 1)
    exact = torch.sigmoid(i.double() / (1 << SIGMOID_STEP_BITS)) * TOTAL
    assert float((sigmoid(i * KNOT).double() - exact).abs().max()) <= 0.5 + 1e-6


def test_sigmoid_is_monotone() -> None:
    knots = torch.arange(-EDGE - 2, EDGE + 3) * KNOT
    inside = torch.randint(-EDGE * KNOT, EDGE * KNOT, (200_000,), generator=torch.Generator().manual_seed(3))
    t = torch.cat([knots - 1, knots, knots + 1, inside, torch.tensor([-(1 << 62), 1 << 62])]).sort().values
    assert (sigmoid(t).diff() >= 0).all()


def test_sigmoid_is_zero_at_the_low_end() -> None:
    low = -EDGE * KNOT
    assert sigmoid(torch.tensor([-(1 << 62), low - 1, low])).tolist() == [0, 0, 0]
    assert int(sigmoid(torch.tensor(-(EDGE - 1) * KNOT))) > 0


def test_sigmoid_is_exactly_one_at_the_top() -> None:
    """BUG: t is clamped to 16 + 1/64 - 2**-32, where the last segment gives 2**24 - 1, never 2**24."""
    high = EDGE * KNOT
    assert sigmoid(torch.tensor([high, high + 1, 1 << 62])).tolist() == [TOTAL] * 3


def test_sigmoid_close_to_float() -> None:
    """Within 3.05e-6 of sigmoid: interpolation (h**2 / 8) * max|sigmoid''| = 2.94e-6, plus table rounding and the floor."""
    t = torch.cat(
        [
            torch.arange(-EDGE * KNOT - KNOT, EDGE * KNOT + KNOT, KNOT // 16 + 12345),
            torch.arange(-EDGE, EDGE) * KNOT + KNOT // 2,  # mid-knot, where the interpolation error peaks
        ]
    )
    error = sigmoid(t).double() / TOTAL - torch.sigmoid(t.double() / (1 << T_FRAC))
    assert float(error.abs().max()) <= 3.05e-6


def test_inverse_scale_is_correctly_rounded_and_clamped() -> None:
    codes = torch.arange(LOG_SCALE_MIN, LOG_SCALE_MAX + 1)
    exact = torch.exp(-codes.double() / (1 << LOG_SCALE_FRAC)) * (1 << INV_SCALE_FRAC)
    assert float((inverse_scale(codes).double() - exact).abs().max()) <= 0.5 + 1e-6
    beyond = inverse_scale(torch.tensor([LOG_SCALE_MIN - 1, -(1 << 40), LOG_SCALE_MAX + 1, 1 << 40]))
    assert beyond.tolist() == inverse_scale(torch.tensor([LOG_SCALE_MIN] * 2 + [LOG_SCALE_MAX] * 2)).tolist()


def test_code_length_is_close_to_the_information() -> None:
    freq = torch.cat([torch.tensor([1, 2, 3, 1 << 12, (1 << 24) - 1, 1 << 24]), torch.randint(1, TOTAL + 1, (100_000,))])
    exact = 24 - torch.log2(freq.double())
    approx = code_length(freq).double() / (1 << CODE_LENGTH_FRAC)
    assert code_length(freq).dtype == torch.int64
    assert float((approx - exact).abs().max()) < 2**-11  # a 12-bit mantissa: within 1/(2**13 ln 2) bits, plus rounding
    assert code_length(torch.tensor([1 << 20])).item() == code_length(torch.tensor([1 << 21])).item() + (1 << CODE_LENGTH_FRAC)


TABLE_HASH = """
import hashlib
import torch
from bitswap_plugin.fixedpoint import LOG_SCALE_MAX, LOG_SCALE_MIN, code_length, inverse_scale, sigmoid
t = torch.arange(-{edge} - 1, {edge} + 1) * {knot}
values = torch.cat([sigmoid(t), sigmoid(t + {knot} // 2), inverse_scale(torch.arange(LOG_SCALE_MIN, LOG_SCALE_MAX + 1)),
                    code_length(torch.arange(1 << 12, 1 << 13))])
digest = hashlib.sha256(values.numpy().tobytes()).hexdigest()
""".format(knot=KNOT, edge=EDGE)
"""Hashes the tables: every sigmoid knot value and, through the mid-knot values, every segment slope;
every inverse scale; every entry of the code-length table."""


def fresh_table_hash(prelude: str = "") -> str:
    """The table hash computed in a fresh interpreter, after running ``prelude``."""
    script = prelude + TABLE_HASH + "print(digest)"
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture(scope="module")
def local_hash() -> str:
    namespace: dict = {}
    exec(TABLE_HASH, namespace)
    return namespace["digest"]


def test_tables_identical_in_fresh_process(local_hash: str) -> None:
    assert fresh_table_hash("import torch; torch.set_num_threads(1)\n") == local_hash


def test_tables_ignore_global_decimal_context(local_hash: str) -> None:
    """BUG: the tables use the *global* decimal context for ``code / 64``, ``-t`` and ``i * step``, so a
    host application that lowered ``decimal.getcontext().prec`` gets a different inverse-scale table."""
    assert fresh_table_hash("import decimal; decimal.getcontext().prec = 6\n") == local_hash
