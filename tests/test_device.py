"""The device option in every front end: it picks where coding runs, never what is written.

On a machine without CUDA, ``cuda:99`` is a well-spelt device that does not
exist: each front end must pass it on to the API, which refuses it when coding.
"""

from __future__ import annotations

import io
import json
import pickle

import numcodecs
import numpy as np
import pytest
import torch
import zarr
from fixtures.photos import crops
from PIL import Image

import bitswap_plugin as bsw
from bitswap_plugin import BitSwap, BitSwapCodec, DeviceError, cli
from bitswap_plugin.api import DEVICE_VARIABLE, resolve_device

IMAGE = crops(2, 32, 40, seed=3)  # an RGB stack of four patches: the network runs
MISSING = "cuda:99"
MODEL = "tiny-rgb"


@pytest.fixture(scope="module")
def data() -> bytes:
    return bsw.compress(IMAGE, model=MODEL)


@pytest.fixture(autouse=True)
def no_device_variable(monkeypatch):
    monkeypatch.delenv(DEVICE_VARIABLE, raising=False)


def test_resolve_device(monkeypatch):
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(None) == torch.device("cpu")
    monkeypatch.setenv(DEVICE_VARIABLE, "cpu:0")
    assert resolve_device(None) == torch.device("cpu:0")
    assert resolve_device(MISSING, require=False) == torch.device(MISSING)
    for device, message in [("gpu", "unknown device 'gpu'"), ("meta", "unsupported device 'meta'"), (MISSING, "not available")]:
        with pytest.raises(DeviceError, match=message):
            resolve_device(device)
    monkeypatch.setenv(DEVICE_VARIABLE, "gpu")
    with pytest.raises(DeviceError, match=f"{DEVICE_VARIABLE}='gpu'"):
        resolve_device(None)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback of a machine without CUDA")
def test_auto_falls_back_to_the_cpu(data):
    assert resolve_device("auto") == torch.device("cpu")
    assert bsw.compress(IMAGE, model=MODEL, device="auto") == data
    np.testing.assert_array_equal(bsw.decompress(data, device="auto"), IMAGE)


def test_api_refuses_a_missing_device(data):
    with pytest.raises(DeviceError, match=MISSING):
        bsw.compress(IMAGE, model=MODEL, device=MISSING)
    with pytest.raises(DeviceError, match=MISSING):
        bsw.decompress(data, device=MISSING)


def test_numcodecs_device_is_a_runtime_option(data):
    codec = BitSwap(model=MODEL, device="auto")
    assert codec.encode(IMAGE) == data
    np.testing.assert_array_equal(codec.decode(data), IMAGE)
    assert "device" not in codec.get_config() and codec == BitSwap(model=MODEL)
    assert numcodecs.get_codec(codec.get_config()).device is None
    assert numcodecs.get_codec({**codec.get_config(), "device": "cpu"}).device == "cpu"
    assert pickle.loads(pickle.dumps(codec)).device == "auto"  # dask ships codecs to workers by pickle
    missing = BitSwap(model=MODEL, device=MISSING)  # a codec may be made here to code elsewhere
    for call in (lambda: missing.encode(IMAGE), lambda: missing.decode(data)):
        with pytest.raises(DeviceError, match=MISSING):
            call()
    with pytest.raises(DeviceError, match="unknown device 'gpu'"):
        BitSwap(device="gpu")


def test_zarr_v3_device_stays_out_of_the_metadata(tmp_path, monkeypatch):
    codec = BitSwapCodec(model=MODEL, device="auto")
    assert "device" not in codec.to_dict()["configuration"] and codec == BitSwapCodec(model=MODEL)
    assert BitSwapCodec.from_dict(codec.to_dict()).device is None
    array = zarr.create_array(tmp_path / "a.zarr", shape=IMAGE.shape, chunks=IMAGE.shape, dtype="uint8",
                              serializer=codec, compressors=None)  # fmt: skip
    array[...] = IMAGE
    assert "device" not in json.loads((tmp_path / "a.zarr" / "zarr.json").read_text())["codecs"][0]["configuration"]
    # an array opened from its metadata codes where BITSWAP_DEVICE says
    monkeypatch.setenv(DEVICE_VARIABLE, MISSING)
    with pytest.raises(DeviceError, match=DEVICE_VARIABLE):
        zarr.open_array(tmp_path / "a.zarr", mode="r")[...]
    monkeypatch.setenv(DEVICE_VARIABLE, "auto")
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "a.zarr", mode="r")[...], IMAGE)
    with pytest.raises(DeviceError, match="unknown device"):
        BitSwapCodec(device="gpu")


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_writes_on_the_codec_device(tmp_path, zarr_format):
    if zarr_format == 2:
        coding = {"compressors": BitSwap(model=MODEL, device=MISSING)}
    else:
        coding = {"serializer": BitSwapCodec(model=MODEL, device=MISSING), "compressors": None}
    array = zarr.create_array(tmp_path / "a.zarr", shape=IMAGE.shape, chunks=IMAGE.shape, dtype="uint8",
                              zarr_format=zarr_format, **coding)  # fmt: skip
    with pytest.raises(DeviceError, match=MISSING):
        array[...] = IMAGE


def test_pillow_save_option_and_load_attribute(tmp_path, data):
    frames = [Image.fromarray(frame) for frame in IMAGE]
    frames[0].save(tmp_path / "x.bsw", save_all=True, append_images=frames[1:], model=MODEL, device="auto")
    assert (tmp_path / "x.bsw").read_bytes() == data
    with pytest.raises(DeviceError, match=MISSING):
        frames[0].save(tmp_path / "y.bsw", model=MODEL, device=MISSING)
    with Image.open(tmp_path / "x.bsw") as image:
        assert image.device is None
        image.device = MISSING
        with pytest.raises(DeviceError, match=MISSING):
            image.load()
        image.device = "auto"
        image.seek(1)
        np.testing.assert_array_equal(np.asarray(image), IMAGE[1])


def test_cli_refuses_a_missing_device(tmp_path, capsys):
    Image.fromarray(IMAGE[0]).save(tmp_path / "x.png")
    assert cli.main(["compress", str(tmp_path / "x.png"), "--model", MODEL, "--device", MISSING]) == 1
    assert MISSING in capsys.readouterr().err and not (tmp_path / "x.bsw").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_writes_and_reads_the_cpu_bytes(tmp_path, monkeypatch, data):
    assert resolve_device("auto").type == "cuda"
    assert bsw.compress(IMAGE, model=MODEL, device="cuda") == data
    np.testing.assert_array_equal(bsw.decompress(data, device="cuda"), IMAGE)
    codec = BitSwap(model=MODEL, device="cuda")
    assert codec.encode(IMAGE) == data
    np.testing.assert_array_equal(codec.decode(data), IMAGE)
    Image.fromarray(IMAGE[0]).save(tmp_path / "x.bsw", model=MODEL, device="cuda")
    assert (tmp_path / "x.bsw").read_bytes() == bsw.compress(IMAGE[0], model=MODEL)
    with Image.open(io.BytesIO(data)) as image:
        image.device = "cuda"
        np.testing.assert_array_equal(np.asarray(image), IMAGE[0])
    monkeypatch.setenv(DEVICE_VARIABLE, "cuda")
    array = zarr.create_array(tmp_path / "a.zarr", shape=IMAGE.shape, chunks=IMAGE.shape, dtype="uint8",
                              serializer=BitSwapCodec(model=MODEL), compressors=None)  # fmt: skip
    array[...] = IMAGE
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "a.zarr", mode="r")[...], IMAGE)
