"""Zarr 3 arrays of format 2 (numcodecs compressor) and format 3 (array -> bytes serializer)."""

from __future__ import annotations

import io
import json
import math
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from fixtures.photos import crops

from bitswap_plugin import BitSwap, BitSwapCodec, read_info, zoo
from bitswap_plugin.errors import InvalidImageError, InvalidOptionError, ModelNotFoundError

# (array, chunks): a grey stack (NHW), an RGBA image with edge chunks (HWC), an RGB stack (NHWC)
_RGB = crops(4, 24, 40)
CASES = {
    "NHW": (_RGB[:, :, :, 1].copy(), (2, 24, 40)),
    "HWC": (np.concatenate([_RGB[0], _RGB[1, :, :, :1]], axis=2)[:, :36], (16, 24, 4)),
    "NHWC": (_RGB[:3, :16, :16], (2, 16, 16, 3)),
}


def _create(path: Path, data: np.ndarray, chunks: tuple[int, ...], zarr_format: int, **codec) -> zarr.Array:
    if zarr_format == 2:
        coding = {"compressors": BitSwap(**codec)}
    else:
        coding = {"serializer": BitSwapCodec(**codec), "compressors": None}
    return zarr.create_array(path, shape=data.shape, chunks=chunks, dtype=data.dtype, zarr_format=zarr_format, **coding)


def _read_in_fresh_process(path: Path) -> np.ndarray:
    """Read an array in a new interpreter that never imports bitswap_plugin itself."""
    script = f"""
import sys, numpy as np, zarr
assert "bitswap_plugin" not in sys.modules
np.save(sys.stdout.buffer, zarr.open_array({str(path)!r}, mode="r")[...])
assert "bitswap_plugin" in sys.modules  # loaded through the entry point
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    return np.load(io.BytesIO(done.stdout))


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("layout", list(CASES))
def test_round_trip(tmp_path, zarr_format, layout):
    data, chunks = CASES[layout]
    array = _create(tmp_path / "a.zarr", data, chunks, zarr_format)
    array[...] = data
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "a.zarr", mode="r")[...], data)
    np.testing.assert_array_equal(array[1:, 3:17], data[1:, 3:17])


# OME-Zarr: (t, c, z, y, x) and (c, z, y, x) grey planes, chunks cutting z (edge chunks padded by Zarr)
_GREY = crops(6, 32, 48, seed=2)[..., 1]
OME = {
    "NNNHW": (_GREY.reshape(2, 1, 3, 32, 48), (1, 1, 2, 32, 48)),
    "NNHW": (_GREY.reshape(2, 3, 32, 48), (1, 2, 32, 48)),
}


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("layout", list(OME))
def test_ome_zarr_chunks_round_trip(tmp_path, zarr_format, layout):
    """Every axis before (y, x) is a stack of grey planes, coded as one chain per chunk."""
    data, chunks = OME[layout]
    array = _create(tmp_path / "a.zarr", data, chunks, zarr_format)
    array[...] = data
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "a.zarr", mode="r")[...], data)
    np.testing.assert_array_equal(array[1, ..., 8:24, 5:40], data[1, ..., 8:24, 5:40])
    if zarr_format == 3:
        assert array.metadata.codecs[0].layout == layout
    chunk = next(path for path in (tmp_path / "a.zarr").rglob("*") if path.is_file() and path.name[0].isdigit())
    info = read_info(chunk.read_bytes())
    assert (info.frames, info.height, info.width, info.mode) == (math.prod(chunks[:-2]), 32, 48, "L")


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_fresh_process_reads_without_importing_the_package(tmp_path, zarr_format):
    data, chunks = CASES["NHWC"]
    _create(tmp_path / "a.zarr", data, chunks, zarr_format)[...] = data
    np.testing.assert_array_equal(_read_in_fresh_process(tmp_path / "a.zarr"), data)


def test_v3_metadata_names_layout_and_models(tmp_path):
    data, chunks = CASES["NHW"]
    _create(tmp_path / "a.zarr", data, chunks, 3, method="bbans")
    (codec,) = json.loads((tmp_path / "a.zarr" / "zarr.json").read_text())["codecs"]
    assert codec == {
        "name": "bitswap",
        "configuration": {
            "model": None,
            "method": "bbans",
            "layout": "NHW",
            "models": {name: zoo.model_hash(name) for name in zoo.DEFAULT_MODELS.values()},
        },
    }


def test_v3_chunks_are_coded_in_threads_and_in_shards(tmp_path):
    """Four 32x64 chunks (two patches each, so the network runs), inside one shard."""
    data = crops(4, 32, 64, seed=1)
    array = zarr.create_array(
        tmp_path / "a.zarr", shape=data.shape, shards=(4, 32, 64, 3), chunks=(1, 32, 64, 3), dtype="uint8",
        serializer=BitSwapCodec(), compressors=None,
    )  # fmt: skip
    array[...] = data
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "a.zarr", mode="r")[...], data)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"dtype": "uint16"}, "uint8 data only, got dtype uint16"),
        ({"dtype": "float32"}, "uint8 data only, got dtype float32"),
        ({"shape": (64,), "chunks": (16,)}, "not an image"),
        ({"shape": (8, 8, 3), "chunks": (8, 8, 3), "serializer": BitSwapCodec(layout="HW")}, "needs 2 axes"),
        ({"shape": (8, 8, 9), "chunks": (8, 8, 9), "serializer": BitSwapCodec(layout="HWC")}, "1 to 4 channels"),
        ({"shape": (2, 8, 8, 9), "chunks": (1, 8, 8, 9), "serializer": BitSwapCodec(layout="NNNHW")}, "needs 5 axes"),
    ],
)
def test_v3_bad_arrays_fail_at_creation(tmp_path, options, message):
    options = {"shape": (8, 8), "chunks": (8, 8), "dtype": "uint8", "serializer": BitSwapCodec(), **options}
    with pytest.raises(InvalidImageError, match=message):
        zarr.create_array(tmp_path / "a.zarr", compressors=None, **options)
    assert not (tmp_path / "a.zarr" / "zarr.json").exists()


@pytest.mark.parametrize(
    "options, message",
    [
        ({"dtype": "uint16"}, "uint8 data only, got dtype uint16 .a Zarr array needs dtype='uint8'"),
        ({"dtype": "float32"}, "uint8 data only, got dtype float32"),
        ({"shape": (64,), "chunks": (16,)}, "shape"),
        ({"shape": (8, 8, 3), "chunks": (8, 8, 3), "order": "F"}, "C-ordered"),
        ({"compressors": BitSwap(layout="NHWC")}, "needs 4 axes"),
    ],
)
def test_v2_bad_arrays_fail_at_first_write(tmp_path, options, message):
    """Zarr format 2 shows a compressor neither the dtype nor the chunk shape at creation (it only asks
    for its configuration), so the metadata is written and the first write fails, writing no chunk."""
    options = {"shape": (8, 8), "chunks": (8, 8), "dtype": "uint8", "compressors": BitSwap(), **options}
    array = zarr.create_array(tmp_path / "a.zarr", zarr_format=2, **options)
    assert (tmp_path / "a.zarr" / ".zarray").exists()
    with pytest.raises(InvalidImageError, match=message):
        array[...] = 1
    assert not any(path.name[0].isdigit() for path in (tmp_path / "a.zarr").iterdir())


def test_v3_compressors_bitswap_names_the_serializer(tmp_path):
    """Zarr format 3 iterates ``compressors=``: the numcodecs codec refuses that, naming the right spelling."""
    spelling = "zarr.create_array(..., serializer=BitSwapCodec(), compressors=None)"
    with pytest.raises(InvalidOptionError, match=re.escape(spelling)):
        zarr.create_array(tmp_path / "a.zarr", shape=(8, 8), dtype="uint8", compressors=BitSwap())
    assert not any((tmp_path / "a.zarr").rglob("*"))  # no metadata written


_V3, _NUMCODECS = "<class 'bitswap_plugin.zarr_codec.BitSwapCodec'>", "<class 'bitswap_plugin.numcodecs_codec.BitSwap'>"


@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"compressors": BitSwapCodec()}, TypeError, f"Expected a BytesBytesCodec. Got {_V3}"),
        ({"compressors": [BitSwap()]}, TypeError, f"Expected a BytesBytesCodec. Got {_NUMCODECS}"),
        ({"serializer": BitSwap()}, TypeError, f"Expected an ArrayBytesCodec. Got {_NUMCODECS}"),
        ({"compressors": BitSwapCodec(), "zarr_format": 2}, ValueError, f"Invalid compressor.* Got {_V3}"),
    ],
)
def test_other_misplaced_codecs_are_refused_by_zarr(tmp_path, options, error, message):
    """Zarr refuses these before calling any code of ours, with the errors the README quotes."""
    with pytest.raises(error, match=message):
        zarr.create_array(tmp_path / "a.zarr", shape=(8, 8), dtype="uint8", **options)
    assert not any((tmp_path / "a.zarr").rglob("*"))  # no metadata written


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_writing_with_another_model_than_pinned_fails(tmp_path, zarr_format):
    data, chunks = CASES["NHWC"]
    rgb = zoo.DEFAULT_MODELS[3]
    array = _create(tmp_path / "a.zarr", data, chunks, zarr_format, models={rgb: "0" * 64})
    with pytest.raises(ModelNotFoundError, match=rgb):
        array[...] = data


def test_codecs_pickle_and_round_trip_their_config():
    for codec in (BitSwap(method="bbans", layout="NHW"), BitSwapCodec(method="bbans", layout="NHW")):
        assert pickle.loads(pickle.dumps(codec)) == codec
    codec = BitSwapCodec(model="tiny-gray", layout="HW")
    assert BitSwapCodec.from_dict(codec.to_dict()) == codec
    assert BitSwapCodec.from_dict({"name": "bitswap"}).models == BitSwapCodec().models
    with pytest.raises(InvalidOptionError, match="unknown method 'cabac': choose one of .*bitswap, bbans"):
        BitSwapCodec(method="cabac")
