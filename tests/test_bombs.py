"""Decompression bombs: a header claiming a huge image is refused before large allocations or long work.

The memory figures come from a fresh process (``python tests/test_bombs.py``
prints them as JSON), so that earlier tests cannot hide an allocation in the
peak RSS.
"""

from __future__ import annotations

import io
import json
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import bitswap_plugin as bsw
from bitswap_plugin import container
from bitswap_plugin.fileformat import MODES, VERSION
from bitswap_plugin.numcodecs_codec import BitSwap

SAMPLE = Path(bsw.__file__).resolve().parent / "samples" / "astronaut.png"
BUDGET_MB = 256
"""Most a refusal may add to the peak RSS (a 16384 x 16384 RGB image alone is 768 MiB)."""


def small_file() -> bytes:
    """A real file: a 24x20 RGB crop, stored all-deflated (so its payload is its seed)."""
    with Image.open(SAMPLE) as image:
        return bsw.compress(np.asarray(image.convert("RGB"))[100:124, 100:120], model="tiny-rgb", method="bitswap")


def claim(data: bytes, height: int, width: int, frames: int = 1, groups: int = 0, group_size: int = 256) -> bytes:
    """``data``'s payload under a header claiming ``frames`` images of ``height x width``.

    The header is structurally sound: its seed (a seed patch and ``groups`` groups of
    ``group_size`` patches when there are groups) covers every patch, and is long enough to
    inflate to its pixels; only the size limits and the payload can refuse it.
    """
    header, _, tail = container.unpack(data)
    header.height, header.width, header.frames, header.stack = height, width, frames, frames > 1
    total = len(MODES[header.mode].planes) * frames * -(-height // 32) * -(-width // 32)
    plan = header.plan
    plan.group_sizes = [group_size] * groups
    plan.lanes_added = [1] + [0] * (groups - 1) if groups else []
    header.num_lanes = 1 if groups else 0
    plan.seed_patches = total - group_size * groups
    plan.seed_length = -(-container.seed_subpixels(header) // container.DEFLATE_MAX_RATIO)
    return container.pack(header, bytes(5) if groups else b"", tail)


CASES = {
    "100000x100000": (100_000, 100_000, 1, 0),
    "16384x16384, seed only": (16384, 16384, 1, 0),
    "16384x16384, 1023 groups": (16384, 16384, 1, 1023),
    "16384x16384, 255 groups of the largest size": (16384, 16384, 1, 255, VERSION.max_group),
    "2**28 frames of 1x1": (1, 1, 1 << 28, 0),
}
READERS = {
    "decompress": bsw.decompress,
    "numcodecs": lambda data: BitSwap().decode(data),
    "Pillow": lambda data: Image.open(io.BytesIO(data)).load(),
    "Pillow, no limit": lambda data: _unlimited(lambda: Image.open(io.BytesIO(data)).load()),
}


def _unlimited(read):
    saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        return read()
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _measure() -> dict:
    """Run every reader on every claim: {case: {reader: [exception, seconds, peak RSS growth MiB]}}."""
    import torch

    torch.set_num_threads(1)
    data = small_file()
    bsw.decompress(data)  # load the model first: its memory is not the bomb's
    results: dict = {}
    for case, args in CASES.items():
        bomb = claim(data, *args)
        for reader_name, reader in READERS.items():
            before, start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.monotonic()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                    reader(bomb)
                outcome = "decoded"
            except Exception as exc:  # noqa: BLE001 - reported, and checked by the test
                outcome = f"{type(exc).__name__}: {exc}"
            grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
            results.setdefault(case, {})[reader_name] = [outcome, round(time.monotonic() - start, 2), round(grown, 1)]
    return results


@pytest.fixture(scope="module")
def measured() -> dict:
    done = subprocess.run([sys.executable, __file__], capture_output=True, text=True, timeout=600, check=True)
    return json.loads(done.stdout)


EXPECTED = {
    "100000x100000": {
        "decompress": "ImageTooLargeError: 1 image(s) of 100000x100000",
        "numcodecs": "ImageTooLargeError",
        "Pillow": "DecompressionBombError",
        "Pillow, no limit": "OSError: cannot decode image: corrupt .bsw file: the seed is longer than the payload",
    },
    "16384x16384, seed only": {
        "decompress": "CorruptFileError: corrupt .bsw file: the seed is longer than the payload",
        "numcodecs": "CorruptFileError: corrupt .bsw file: the seed is longer than the payload",
        "Pillow": "DecompressionBombError",
        "Pillow, no limit": "OSError: cannot decode image: corrupt .bsw file: the seed is longer",
    },
    "16384x16384, 1023 groups": {
        "decompress": "CorruptFileError: corrupt stream: decoding reads past the bottom of the ANS tail",
        "numcodecs": "CorruptFileError: corrupt stream: decoding reads past the bottom of the ANS tail",
        "Pillow": "DecompressionBombError",
        "Pillow, no limit": "OSError: cannot decode image: corrupt stream: decoding reads past the bottom",
    },
    "16384x16384, 255 groups of the largest size": {
        "decompress": "CorruptFileError: corrupt stream: decoding reads past the bottom of the ANS tail",
        "numcodecs": "CorruptFileError: corrupt stream: decoding reads past the bottom of the ANS tail",
        "Pillow": "DecompressionBombError",
        "Pillow, no limit": "OSError: cannot decode image: corrupt stream: decoding reads past the bottom",
    },
    "2**28 frames of 1x1": {
        "decompress": "ImageTooLargeError: 268435456 image(s) of 1x1 pixels, padded to 32x32 patches",
        "numcodecs": "ImageTooLargeError",
        "Pillow": "DecompressionBombError",
        "Pillow, no limit": "OSError: cannot decode image: corrupt .bsw file: the seed is longer",
    },
}


@pytest.mark.parametrize("case", list(CASES))
def test_claims_are_refused_before_allocating(measured, case):
    for reader, expected in EXPECTED[case].items():
        outcome, seconds, grown = measured[case][reader]
        assert outcome.startswith(expected), (reader, outcome)
        assert grown < BUDGET_MB, (reader, grown)
        assert seconds < 30, (reader, seconds)  # the groups case pops until its 100-byte tail runs dry


def test_the_header_alone_is_readable():
    """read_info and Image.open read what a file claims; only decoding refuses it."""
    bomb = claim(small_file(), 100_000, 100_000)
    assert bsw.read_info(bomb).shape == (100_000, 100_000, 3)
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(bomb))


def test_pillow_threshold_replaces_the_api_limit(monkeypatch):
    """Pillow warns above MAX_IMAGE_PIXELS and refuses above twice it; loading works below that."""
    data = small_file()  # 24 x 20 = 480 pixels, one 32 x 32 patch
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 400)
    with pytest.warns(Image.DecompressionBombWarning), Image.open(io.BytesIO(data)) as image:
        with pytest.raises(OSError, match="1024|limit"):
            image.load()  # the coder's 1024 padded pixels are over Pillow's threshold of 800
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 239)
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(data))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 512)
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == (20, 24) and np.asarray(image).shape == (24, 20, 3)


if __name__ == "__main__":
    print(json.dumps(_measure()))
