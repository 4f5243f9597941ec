"""Frozen test vectors: .bsw files written by an earlier version must decode, and re-encode to the same bytes.

``tests/vectors/*.bsw`` hold small streams of every mode, both bits-back methods,
the classical methods, a stack, grey colour, constant alpha, metadata and the
tiny, default, older mixture-of-logistics and one-logistic models, cut from the bundled public-domain sample. They
pin the format, the integer models and the encoder's choices together: a change
that alters any byte of a new stream fails here, on purpose. After an intended
change (a new model, a format version), record new vectors beside the old ones
with ``python tests/test_vectors.py NAME-SUFFIX`` and keep the old files while
their models ship.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import bitswap_plugin as bsw
from bitswap_plugin import container

VECTORS = Path(__file__).resolve().parent / "vectors"
SAMPLE = Path(bsw.__file__).resolve().parent / "samples" / "astronaut.png"

BITSWAP = {"method": "bitswap"}
CASES = {
    # name: (mode, (top, left, height, width), frames, compress options); every bits-back case
    # has more than 16 patches, so the model coder runs (smaller images may be stored deflated)
    "rgb-bitswap": ("RGB", (20, 30, 150, 120), 1, BITSWAP),
    "rgb-bbans": ("RGB", (20, 30, 150, 120), 1, {"method": "bbans"}),
    "gray": ("L", (50, 10, 140, 130), 1, BITSWAP),
    "rgba": ("RGBA", (0, 0, 130, 100), 1, BITSWAP),
    "la": ("LA", (100, 100, 130, 150), 1, {"method": "bbans"}),
    "rgb-stack": ("RGB", (60, 60, 64, 72), 3, BITSWAP),
    "rgb-tiny": ("RGB", (120, 100, 130, 130), 1, {"model": "tiny-rgb", **BITSWAP}),
    "rgb-mixture": ("RGB", (20, 30, 150, 120), 1, {"model": "polyphase-rgb-l3-mix3", **BITSWAP}),
    "rgb-one-logistic": ("RGB", (20, 30, 150, 120), 1, {"model": "polyphase-rgb-l3-9", **BITSWAP}),
    "grey-rgb-opaque": ("RGBA-grey-opaque", (50, 10, 140, 130), 1, {**BITSWAP, "metadata": {"dpi": b"300.0,300.0", "text:Author": b"NASA"}}),
    "rgb-webp": ("RGB", (20, 30, 150, 120), 1, {"method": "webp"}),
    "la-png": ("LA", (100, 100, 130, 150), 1, {"method": "png"}),
    "rgba-raw-stack": ("RGBA", (60, 60, 20, 24), 2, {"method": "raw"}),
}


def source(name: str) -> np.ndarray:
    """The pixels of case ``name``, cut from the sample (alpha and frames derived deterministically)."""
    mode, (top, left, height, width), frames, _ = CASES[name]
    with Image.open(SAMPLE) as im:
        rgb = np.asarray(im.convert("RGB"))
    stack = [rgb[top + 5 * i : top + 5 * i + height, left : left + width] for i in range(frames)]
    out = []
    for rgb_frame in stack:
        gray = np.asarray(Image.fromarray(rgb_frame).convert("L"))
        alpha = (255 - gray // 3).astype(np.uint8)
        opaque = np.full_like(gray, 255)
        out.append({"RGB": rgb_frame, "L": gray, "RGBA": np.dstack([rgb_frame, alpha]), "LA": np.dstack([gray, alpha]),
                    "RGBA-grey-opaque": np.dstack([gray, gray, gray, opaque])}[mode])
    return np.stack(out) if frames > 1 else out[0]


def _manifest() -> dict:
    path = VECTORS / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _vector_files() -> list[str]:
    return sorted(_manifest())


@pytest.mark.parametrize("file", _vector_files())
def test_vector_decodes_to_its_pixels(file: str) -> None:
    entry = _manifest()[file]
    data = (VECTORS / file).read_bytes()
    header = container.unpack(data)[0]
    assert not header.learned or header.plan.group_sizes, "a bits-back vector must exercise the model coder"
    decoded = bsw.decompress(data)
    assert list(decoded.shape) == entry["shape"]
    assert hashlib.sha256(decoded.tobytes()).hexdigest() == entry["pixels_sha256"]
    assert np.array_equal(decoded, source(entry["case"]))


@pytest.mark.parametrize("file", _vector_files())
def test_encoder_still_writes_the_same_bytes(file: str) -> None:
    entry = _manifest()[file]
    options = CASES[entry["case"]][3]
    assert entry["models"] == [name for name, _ in bsw.read_info((VECTORS / file).read_bytes()).models]
    if not entry["current"]:
        pytest.skip("written by an earlier encoder, model or format version; decode-only")
    if options.get("method") in ("png", "webp"):
        pytest.skip("PNG and WebP bytes are zlib's and libwebp's, which differ between versions; decode-only")
    assert bsw.compress(source(entry["case"]), **options) == (VECTORS / file).read_bytes()


def test_every_case_has_a_current_vector() -> None:
    current = {entry["case"] for entry in _manifest().values() if entry["current"]}
    assert current == set(CASES)


def record(suffix: str) -> None:
    """Write a vector per case as ``<case>-<suffix>.bsw``; older vectors become decode-only."""
    VECTORS.mkdir(exist_ok=True)
    manifest = _manifest()
    for entry in manifest.values():
        entry["current"] = False
    for name, (_, _, _, options) in CASES.items():
        pixels = source(name)
        data = bsw.compress(pixels, **options)
        file = f"{name}-{suffix}.bsw"
        (VECTORS / file).write_bytes(data)
        manifest[file] = {
            "case": name,
            "current": True,
            "shape": list(pixels.shape),
            "pixels_sha256": hashlib.sha256(pixels.tobytes()).hexdigest(),
            "models": [model for model, _ in bsw.read_info(data).models],
        }
    (VECTORS / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    record(sys.argv[1])
