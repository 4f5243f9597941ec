"""Fuzzing at CI size: ``benchmarks/fuzz.py``'s oracle on mutated real files, its watchdog, properties."""

from __future__ import annotations

import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bitswap_plugin as bsw
from bitswap_plugin import container

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import fuzz  # noqa: E402 - the script under benchmarks/

PROPERTY = settings(max_examples=150, deadline=None)


@pytest.fixture(scope="module")
def seeds() -> dict[str, bytes]:
    return fuzz.seed_files()


@pytest.fixture(scope="module")
def shallow(seeds) -> list[bytes]:
    """The seeds stored all-deflated: they decode in milliseconds."""
    return [data for name, data in seeds.items() if not name.startswith("deep-")]


def test_seeds_cover_modes_methods_and_both_storages(seeds):
    infos = {name: bsw.read_info(data) for name, data in seeds.items()}
    assert {info.mode for info in infos.values()} == {"L", "LA", "RGB", "RGBA"}
    assert {info.method for info in infos.values()} == {"bitswap", "bbans"}
    assert any(info.stack for info in infos.values())
    for name, data in seeds.items():
        assert bool(container.read_header(data)[0].plan.group_sizes) == name.startswith("deep-")


def test_seeds_decode_alike_everywhere(seeds):
    for name, data in seeds.items():
        if not name.startswith("deep-") or name == "deep-rgb-40x24-bbans":
            assert fuzz.check(data) == "decoded", name


def test_header_fields_locate_the_checksum(seeds):
    for data in seeds.values():
        fields, crc_at = fuzz.header_fields(data)
        assert crc_at == container.read_header(data)[1] - 4
        assert fields[-1][0] + fields[-1][1] == crc_at and fuzz.fix_crc(data) == data
        assert fuzz.header_fields(data[: crc_at + 3]) is None


def test_mutations_reach_every_stage(seeds, shallow):
    """2000 mutated inputs pass the oracle, and get past the header checksum to each later check."""
    rng = random.Random(7)
    corpus = list(seeds.values())
    outcomes = Counter(fuzz.check(fuzz.mutate(rng.choice(shallow), corpus, rng)) for _ in range(2000))
    stages = ("checksum mismatch", "cover the image", "ModelNotFoundError", "seed block", "pixels fail the checksum", "decoded")
    for stage in stages:
        assert any(stage in outcome for outcome in outcomes), (stage, outcomes)


def test_network_coded_mutations(seeds):
    rng = random.Random(3)
    deep = [data for name, data in seeds.items() if name.startswith("deep-")]
    for _ in range(2):
        fuzz.check(fuzz.mutate(rng.choice(deep), list(seeds.values()), rng))


def test_watchdog_saves_slow_inputs(seeds, tmp_path):
    """With a 5 ms limit, inputs decoded through the network are hangs (on an idle machine a tiny model
    decodes a two-patch seed in well under 50 ms): each is saved, its worker replaced. Every input is
    a network-coded seed's: the watchdog looks about every 0.2 s, and with half of them shallow its
    few looks in 40 inputs could all fall between slow ones."""
    fuzzer = fuzz.Fuzzer(seeds, tmp_path, workers=1, chance=1.0, seed=1, timeout=0.005, rss_limit=4096)
    report = fuzzer.run(inputs=40, seconds=300)
    assert report["inputs"] >= 40 and set(report["failures"]) == {"hang"}, report
    saved = sorted(path.stem for path in tmp_path.glob("hang-*.txt"))
    assert 1 <= len(saved) <= report["failures"]["hang"]  # named by content: an input that hangs twice is saved once
    assert saved == sorted(path.stem for path in tmp_path.glob("hang-*.bsw"))
    assert "more than 0.005 s" in next(tmp_path.glob("hang-*.txt")).read_text()
    fuzz.check(next(tmp_path.glob("hang-*.bsw")).read_bytes())  # slow, not wrong


def test_atheris_engine(tmp_path):
    pytest.importorskip("atheris")
    command = [sys.executable, str(BENCHMARKS / "fuzz.py"), "--engine", "atheris", "--deep", "0", "--inputs", "100"]
    done = subprocess.run([*command, "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "Done 100 runs" in done.stderr, done.stderr[-2000:]


@PROPERTY
@given(st.binary(max_size=400), st.booleans())
def test_arbitrary_bytes(tail, magic):
    data = (container.MAGIC if magic else b"") + tail
    fuzz.check(data)
    fuzz.check(fuzz.fix_crc(data))


@PROPERTY
@given(st.data())
def test_header_numbers_with_a_valid_checksum(shallow, data):
    """Any value in any fixed-size header field or varint (also overlong), the checksum recomputed."""
    original = data.draw(st.sampled_from(shallow))
    fields, _ = fuzz.header_fields(original)
    at, size, kind = data.draw(st.sampled_from([field for field in fields if field[2] not in ("name", "digest")]))
    if kind in ("u8", "u32"):
        new = data.draw(st.integers(0, (1 << 8 * size) - 1)).to_bytes(size, "little")
    else:
        new = fuzz.leb128(data.draw(st.integers(0, (1 << 70) - 1)), data.draw(st.integers(0, 2)))
    fuzz.check(fuzz.fix_crc(original[:at] + new + original[at + size :]))

