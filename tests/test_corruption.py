"""Corruption at CI size: truncations and bit flips of real files give a clean error or the exact pixels."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bitswap_plugin as bsw

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import corruption_sweep  # noqa: E402 - the script under benchmarks/
import fuzz  # noqa: E402


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    seeds = fuzz.seed_files()
    return {name: seeds[name] for name in corruption_sweep.FILES}


@pytest.mark.parametrize("name, flips", [("la-20x30-bitswap", 400), ("stack-2x20x16-bbans", 400), ("deep-rgb-40x24-bbans", 3)])
def test_sweep(files, name, flips):
    data = files[name]
    counts = corruption_sweep.sweep(data, flips, random.Random(name))
    assert counts["truncation"] == {"error": len(data)}
    assert sum(counts["flip"].values()) == flips and set(counts["flip"]) <= {"error", "exact"}, counts


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_any_flip_of_a_deflated_file(files, data):
    name = data.draw(st.sampled_from(["la-20x30-bitswap", "stack-2x20x16-bbans"]))
    original = files[name]
    bit = data.draw(st.integers(0, 8 * len(original) - 1))
    damaged = bytearray(original)
    damaged[bit // 8] ^= 1 << bit % 8
    assert corruption_sweep.outcome(bytes(damaged), bsw.decompress(original)) in ("error", "exact")
