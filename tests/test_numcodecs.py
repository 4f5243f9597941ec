"""The numcodecs codec: numcodecs' own conformance checks, layouts, model pins and errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numcodecs
import numpy as np
import pytest
from fixtures.photos import crops
from numcodecs.tests import common

from bitswap_plugin import BitSwap, read_info, zoo
from bitswap_plugin.adapters import default_layout
from bitswap_plugin.errors import CorruptFileError, InvalidImageError, InvalidOptionError, ModelNotFoundError

FIXTURES = Path(__file__).parent / "fixtures"


def _images() -> dict[str, np.ndarray]:
    """One small image per layout; the stacks have 2 patches or more, so they go through the network.
    NNHW and NNNHW are OME-Zarr's (c, z, y, x) and (t, c, z, y, x) chunks of grey planes."""
    rgb = crops(3, 16, 24)
    return {
        "HW": rgb[0, :, :, 1].copy(),
        "HWC": np.concatenate([rgb[0], rgb[1, :, :, :1]], axis=2),
        "NHW": rgb[:2, :, :, 0].copy(),
        "NHWC": rgb[1:],
        "NNHW": rgb[:2].transpose(0, 3, 1, 2).copy(),
        "NNNHW": rgb[:2].transpose(0, 3, 1, 2).reshape(2, 1, 3, 16, 24),
    }


@pytest.mark.parametrize("layout", list(_images()))
def test_numcodecs_conformance(layout):
    image = _images()[layout]
    common.check_encode_decode(image, BitSwap(shape=image.shape, layout=layout))


def test_config_and_repr(monkeypatch):
    codec = BitSwap(method="bbans", shape=(8, 8, 3), device="auto")
    common.check_config(codec)  # the device is a runtime option: in the repr, not in the config
    assert codec.get_config() == {
        "id": "bitswap",
        "model": None,
        "method": "bbans",
        "layout": "HWC",
        "shape": [8, 8, 3],
        "models": {name: zoo.model_hash(name) for name in zoo.DEFAULT_MODELS.values()},
    }
    monkeypatch.setattr(common, "BitSwap", BitSwap, raising=False)  # check_repr evaluates in that module
    common.check_repr(f"BitSwap(device='auto', layout='HWC', method='bbans', model=None, models={codec.models!r}, shape=(8, 8, 3))")


def test_backwards_compatibility(monkeypatch):
    """Streams written by an earlier version (tests/fixtures/fixture/bitswap) still decode.

    They name the shipped models by hash: a retrained model cannot read them, and this
    test says so. To record new fixtures, delete that folder and run the test."""
    monkeypatch.chdir(FIXTURES)
    rgb = crops(2, 16, 40)
    arrays = [rgb[0, :, :, 0].copy(), rgb[1, :, :24], np.concatenate([rgb, rgb[:, :, :, :1]], axis=3)[:, :, :16]]
    tiny = {name: zoo.model_hash(name) for name in ("tiny-rgb", "tiny-gray")}  # the defaults until 2026-11-28
    first = {name: zoo.model_hash(name) for name in ("bitswap-rgb", "bitswap-gray")}  # the defaults until 2026-12-01
    # recorded when the default method was "bitswap" (before "auto", 2026-12-02)
    codecs = [BitSwap(method=method, models=models) for models in (tiny, first) for method in ("bitswap", "bbans")]
    common.check_backwards_compatibility("bitswap", arrays, codecs)


def test_fresh_process_finds_the_codec_through_the_entry_point(tmp_path):
    image = _images()["HWC"]
    codec = BitSwap()
    (tmp_path / "image.bsw").write_bytes(codec.encode(image))
    (tmp_path / "config.json").write_text(json.dumps(codec.get_config()))
    np.save(tmp_path / "image.npy", image)
    script = """
import json, sys, numcodecs, numpy as np
assert "bitswap_plugin" not in sys.modules
codec = numcodecs.get_codec(json.load(open("config.json")))
decoded = codec.decode(open("image.bsw", "rb").read())
assert type(codec).__module__ == "bitswap_plugin.numcodecs_codec"
assert (decoded == np.load("image.npy")).all()
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_decoded_shape_follows_the_layout():
    images = _images()
    codec = BitSwap()
    for layout, image in images.items():
        data = BitSwap(layout=layout).encode(image)
        assert codec.encode(image) == data  # the layout inferred from the shape
        # with no shape to follow, several stack axes come back as one
        stacked = image.reshape(-1, *image.shape[layout.count("N") :]) if "N" in layout else image
        np.testing.assert_array_equal(BitSwap(layout=layout).decode(data), stacked)
        np.testing.assert_array_equal(BitSwap(shape=image.shape).decode(data), image)
        out = np.zeros_like(image)
        assert BitSwap(layout=layout).decode(data, out=out) is out
        np.testing.assert_array_equal(out, image)
        # without a layout, decode returns what bitswap_plugin.decompress returns: grey stacks gain a C axis
        assert codec.decode(data).size == image.size


def test_default_layout():
    """The last two axes are (y, x) and all before them a stack of grey planes, unless the last axis
    of a 3-axis or longer shape has 1 to 4 entries: then it is colour channels."""
    shapes = {
        (5, 6): "HW", (5, 6, 3): "HWC", (5, 6, 7): "NHW", (2, 5, 6, 1): "NHWC", (1, 3, 64, 80): "NNHW",
        (2, 1, 3, 64, 80): "NNNHW", (2, 2, 8, 8, 3): "NNHWC", (1, 1, 1, 1, 2, 8, 8): "NNNNNHW",
    }  # fmt: skip
    assert {shape: default_layout(shape) for shape in shapes} == shapes
    for shape in [(7,), ()]:
        with pytest.raises(InvalidImageError, match="not an image"):
            default_layout(shape)


def test_ome_zarr_chunk_is_one_chain_of_grey_planes():
    image = _images()["NNNHW"]
    info = read_info(BitSwap().encode(image))
    assert (info.frames, info.height, info.width, info.mode) == (6, 16, 24, "L")


def test_models_are_pinned_by_hash():
    # the chosen model, and the default grey model for alpha planes
    assert BitSwap(model="tiny-gray").models == {name: zoo.model_hash(name) for name in ("tiny-gray", zoo.DEFAULT_MODELS[1])}
    image = _images()["HW"]
    stale = BitSwap(models={name: "0" * 64 for name in zoo.DEFAULT_MODELS.values()})
    with pytest.raises(ModelNotFoundError, match=zoo.DEFAULT_MODELS[1]):
        stale.encode(image)
    # decoding needs no pin: a stream names its own models
    np.testing.assert_array_equal(stale.decode(BitSwap().encode(image)), image)
    with pytest.raises(ModelNotFoundError, match="no-such-model"):
        BitSwap(model="no-such-model")


@pytest.mark.parametrize(
    "data, codec, message",
    [
        (np.zeros((8, 8), np.uint16), BitSwap(), "uint8 data only, got dtype uint16"),
        (np.zeros((8, 8, 3), np.float32), BitSwap(), "uint8 data only, got dtype float32"),
        (np.zeros((8, 8), bool), BitSwap(), "uint8 data only"),
        (np.zeros(64, np.uint8), BitSwap(), "shape"),
        (b"\0" * 64, BitSwap(), "shape"),
        (np.zeros((8, 8, 5), np.uint8), BitSwap(layout="HWC"), "1 to 4 channels"),
        (np.zeros((1, 2, 8, 8, 5), np.uint8), BitSwap(layout="NNHWC"), "1 to 4 channels"),
        (np.zeros((1, 2, 8, 8), np.uint8), BitSwap(layout="NNNHW"), "needs 5 axes"),
        (np.zeros((8, 8, 3), np.uint8), BitSwap(layout="NHWC"), "needs 4 axes"),
        (np.zeros((8, 8, 3), np.uint8, order="F"), BitSwap(), "C-ordered"),
        (np.zeros((8, 8, 3), np.uint8), BitSwap(shape=(8, 8, 4)), "configured for shape"),
        (b"\0" * 65, BitSwap(shape=(8, 8)), "configured for shape"),
    ],
)
def test_bad_data_is_refused(data, codec, message):
    with pytest.raises(InvalidImageError, match=message):
        codec.encode(data)


@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"method": "cabac"}, InvalidOptionError, "unknown method 'cabac': choose one of auto, bitswap, bbans"),
        ({"layout": "CHW"}, InvalidOptionError, "unknown layout 'CHW': a layout is HW or HWC after any number of N"),
        ({"layout": "HWN"}, InvalidOptionError, "unknown layout 'HWN'"),
        ({"shape": (8, 8, 5), "layout": "HWC"}, InvalidImageError, "1 to 4 channels"),
        ({"shape": (8, 8, 3), "layout": "HW"}, InvalidImageError, "needs 2 axes"),
        ({"shape": (0, 8)}, InvalidImageError, "positive"),
    ],
)
def test_bad_config_is_refused(options, error, message):
    with pytest.raises(error, match=message):
        BitSwap(**options)


def test_a_stream_that_does_not_fit_the_layout_is_refused():
    data = BitSwap().encode(_images()["HWC"])
    with pytest.raises(CorruptFileError, match="'HW' chunk"):
        BitSwap(layout="HW").decode(data)
    with pytest.raises(CorruptFileError, match=r"1 RGBA image\(s\) of 16x24, which a 'HWC' chunk of shape \(16, 24, 3\)"):
        BitSwap(shape=(16, 24, 3)).decode(data)
    with pytest.raises(CorruptFileError, match="cannot hold"):
        BitSwap(shape=(2, 1, 1, 16, 24)).decode(BitSwap().encode(_images()["NNNHW"]))
    with pytest.raises(CorruptFileError):
        BitSwap().decode(data[:-1])


def test_registered_in_numcodecs():
    assert isinstance(numcodecs.get_codec({"id": "bitswap", "method": "bbans"}), BitSwap)
