"""Never worse than the classics: the classical methods, the automatic choice, redundant planes.

``compress(method="auto")`` keeps the smallest of the raw pixels, WebP lossless (PNG
where WebP cannot hold the image) and Bit-Swap. These tests hold it to its
guarantees on random and adversarial arrays and on the graphics set.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

import bitswap_plugin as bsw
from bitswap_plugin import classical, container
from bitswap_plugin.bench.graphics import GRAPHICS, SAMPLE
from bitswap_plugin.errors import CorruptFileError, InvalidOptionError

HEADER_ALLOWANCE = 64
"""The guarantee: a file is at most this many bytes over the raw pixels and over the fallback."""


def _roundtrip(array: np.ndarray, **options) -> bytes:
    data = bsw.compress(array, **options)
    decoded = bsw.decompress(data)
    assert decoded.shape == array.shape and np.array_equal(decoded, array)
    return data


def _fallback_bytes(array: np.ndarray) -> int:
    """What the encoder's cheap fallback payload alone costs (WebP where it can, else PNG)."""
    stack = array.reshape(1, *array.shape[:2], -1) if array.ndim <= 3 else array
    method = "webp" if classical.available("webp", *stack.shape[1:3]) else "png"
    return len(classical.encode(np.ascontiguousarray(stack), method))


shapes = st.tuples(st.integers(1, 40), st.integers(1, 40), st.sampled_from([None, 1, 2, 3, 4]))


@st.composite
def images(draw) -> np.ndarray:
    height, width, channels = draw(shapes)
    shape = (height, width) if channels is None else (height, width, channels)
    kind = draw(st.sampled_from(["noise", "few", "constant"]))
    if kind == "noise":
        return draw(arrays(np.uint8, shape))
    values = draw(st.lists(st.integers(0, 255), min_size=1, max_size=1 if kind == "constant" else 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    return np.asarray(values, np.uint8)[rng.integers(0, len(values), shape)]


@st.composite
def stacks(draw) -> np.ndarray:
    """(N, H, W, 2 or 4) stacks whose frames are each opaque or not: libwebp drops an all-255 alpha."""
    frames, height, width = draw(st.integers(2, 3)), draw(st.integers(1, 24)), draw(st.integers(1, 24))
    channels = draw(st.sampled_from([2, 4]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    stack = rng.integers(0, draw(st.sampled_from([2, 256])), (frames, height, width, channels), dtype=np.uint8)
    for frame in range(frames):
        if draw(st.booleans()):
            stack[frame, ..., -1] = 255
    return stack


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(images(), stacks()))
def test_never_larger_than_raw_or_fallback(array: np.ndarray) -> None:
    data = _roundtrip(array)
    assert len(data) <= array.nbytes + HEADER_ALLOWANCE
    assert len(data) <= _fallback_bytes(array) + HEADER_ALLOWANCE


@pytest.mark.parametrize("shape", [(64, 48, 3), (3, 1, 1), (1, 300), (17, 23, 4)])
def test_noise_is_stored_raw(shape: tuple[int, ...]) -> None:
    array = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    data = _roundtrip(array)
    assert bsw.read_info(data).method == "raw"
    assert len(data) <= array.nbytes + HEADER_ALLOWANCE


def test_frames_webp_cannot_hold_fall_back_to_png() -> None:
    tall = np.zeros((20000, 2), np.uint8)
    tall[::7] = 255
    data = _roundtrip(tall)
    assert bsw.read_info(data).method == "png" and len(data) < 400
    with pytest.raises(InvalidOptionError, match="'webp' cannot code 20000x2"):
        bsw.compress(tall, method="webp")


@pytest.mark.parametrize("method", ["raw", "png", "webp"])
@pytest.mark.parametrize("mode_shape", [(30, 20), (30, 20, 1), (30, 20, 2), (30, 20, 3), (30, 20, 4), (3, 30, 20, 3)])
def test_each_classical_method_round_trips_every_mode(method: str, mode_shape: tuple[int, ...]) -> None:
    array = np.random.default_rng(1).integers(0, 256, mode_shape, dtype=np.uint8)
    if len(mode_shape) == 3 and mode_shape[2] in (2, 4):
        array[..., -1] = np.where(array[..., -1] < 128, 0, array[..., -1])  # fully transparent pixels keep their colour
    data = _roundtrip(array, method=method)
    info = bsw.read_info(data)
    assert info.method == method and info.models == ()


@pytest.mark.parametrize("crop", [(slice(0, 96), slice(0, 128)), (slice(100, 164), slice(150, 214))])
def test_auto_keeps_the_smallest_candidate(crop: tuple[slice, slice]) -> None:
    """Up to 64 patches the learned coder always runs; the file is the smallest stream."""
    with Image.open(SAMPLE) as im:
        photo = np.asarray(im.convert("RGB"))[crop]
    calls: list[int] = []
    auto = _roundtrip(photo, progress=lambda done, total: calls.append(done))
    forced = _roundtrip(photo, method="bitswap")
    assert calls, "the learned coder ran"
    assert len(auto) <= min(len(forced), photo.nbytes + 40, _fallback_bytes(photo) + 40)
    assert (bsw.read_info(auto).method == "bitswap") == (len(auto) == len(forced))


def test_learned_coder_skipped_where_its_estimate_loses() -> None:
    """A screenshot of 128 patches: the -ELBO of 64 patches says Bit-Swap would be far larger."""
    calls: list[int] = []
    data = _roundtrip(GRAPHICS["text-screenshot"](), progress=lambda done, total: calls.append(done))
    assert not calls and bsw.read_info(data).method == "webp"


GRAPHICS_TARGET = 1.10
"""The file may be at most this much larger than the better of PNG (optimize) and WebP lossless
(or the header allowance larger, for files of a few dozen bytes)."""


@pytest.mark.parametrize("name", ["text-screenshot", "palette-53", "mask", "flat", "logo-rgba"])
def test_graphics_within_ten_percent_of_png_and_webp(name: str) -> None:
    array = GRAPHICS[name]()
    data = _roundtrip(array)
    best = []
    for fmt, options in (("PNG", {"optimize": True}), ("WEBP", {"lossless": True, "quality": 100, "method": 6, "exact": True})):
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, fmt, **options)
        best.append(buffer.tell())
    assert len(data) <= max(GRAPHICS_TARGET * min(best), min(best) + HEADER_ALLOWANCE), (len(data), best)


def test_grey_rgb_costs_what_its_grey_plane_costs() -> None:
    grey = GRAPHICS["scanned-page"]()[..., 0]
    as_rgb = np.repeat(grey[..., None], 3, axis=2)
    for method in ("bitswap", "webp"):
        rgb_data, grey_data = _roundtrip(as_rgb, method=method), _roundtrip(grey, method=method)
        assert len(rgb_data) - len(grey_data) <= 1, method  # the channel-axis flag aside, the same stream
        assert bsw.read_info(rgb_data).coded_mode == "L"


def test_constant_alpha_costs_one_byte() -> None:
    rgb = np.random.default_rng(3).integers(100, 110, (40, 50, 3), dtype=np.uint8)
    for value in (0, 255):
        rgba = np.dstack([rgb, np.full(rgb.shape[:2], value, np.uint8)])
        with_alpha, without = _roundtrip(rgba, method="bitswap"), _roundtrip(rgb, method="bitswap")
        assert len(with_alpha) - len(without) == 1
        assert bsw.read_info(with_alpha).coded_mode == "RGB"
    grey_opaque = np.dstack([np.repeat(rgb[..., :1], 3, axis=2), np.full(rgb.shape[:2], 255, np.uint8)])
    assert bsw.read_info(_roundtrip(grey_opaque)).coded_mode == "L"


def test_a_forced_colour_model_keeps_grey_rgb_as_rgb() -> None:
    grey_rgb = np.repeat(np.arange(64, dtype=np.uint8).reshape(8, 8)[..., None], 3, axis=2).repeat(4, 0).repeat(4, 1)
    data = _roundtrip(grey_rgb, model="tiny-rgb", method="bitswap")
    assert bsw.read_info(data).coded_mode == "RGB"


def _swap_payload(data: bytes, payload: bytes) -> bytes:
    header, start = container.read_header(data)
    header.head_length = len(payload)
    return container.pack(header, payload)


@pytest.mark.parametrize("method", ["png", "webp", "raw"])
def test_damaged_classical_payload_is_a_clear_error(method: str) -> None:
    array = GRAPHICS["pixel-art"]()[:64, :64]
    data = bsw.compress(array, method=method)
    header, start = container.read_header(data)
    payload = data[start:]
    middle = len(payload) // 2
    for damaged in (payload[:middle], payload[:middle] + bytes([payload[middle] ^ 0x10]) + payload[middle + 1 :], payload[:5] + b"\x00" * (len(payload) - 5)):
        with pytest.raises(CorruptFileError):
            bsw.decompress(_swap_payload(data, damaged))


def test_classical_frame_of_another_size_is_refused_before_decoding() -> None:
    data = bsw.compress(np.zeros((32, 32), np.uint8), method="png")
    buffer = io.BytesIO()
    Image.new("L", (5000, 5000)).save(buffer, "PNG")
    with pytest.raises(CorruptFileError, match="5000x5000, not 32x32"):
        bsw.decompress(_swap_payload(data, container.varint(buffer.tell()) + buffer.getvalue()))


def test_unknown_method_names_every_method() -> None:
    with pytest.raises(InvalidOptionError, match="auto, bitswap, bbans, raw, png, webp"):
        bsw.compress(np.zeros((8, 8), np.uint8), method="jpeg")


def test_a_palette_gif_through_the_cli(tmp_path) -> None:
    """A real GIF (P mode, 53 colours) as a user compresses it: far below PNG of the same pixels, never above raw."""
    from bitswap_plugin.cli import main

    with Image.open(SAMPLE) as im:
        im.convert("RGB").resize((256, 192)).quantize(53).save(tmp_path / "palette.gif")
    assert main(["compress", str(tmp_path / "palette.gif"), "-q"]) == 0
    data = (tmp_path / "palette.bsw").read_bytes()
    with Image.open(tmp_path / "palette.gif") as gif:
        pixels = np.asarray(gif.convert("RGB"))
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG", optimize=True)
    assert len(data) < 0.6 * buffer.tell() and len(data) < pixels.nbytes
    assert main(["decompress", str(tmp_path / "palette.bsw"), "-o", str(tmp_path / "back.png"), "-q"]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "back.png")), pixels)


@pytest.mark.parametrize("channels", [2, 4])
def test_stack_with_an_opaque_frame_round_trips(channels: int) -> None:
    """libwebp leaves out a frame's alpha that is 255 everywhere; the decoder fills it back in."""
    stack = np.full((2, 48, 48, channels), 255, np.uint8)
    stack[..., :-1] = np.random.default_rng(4).integers(0, 4, (2, 48, 48, channels - 1))
    stack[1, 10:20, 10:20, -1] = 0
    for method in ("auto", "webp", "png"):
        _roundtrip(stack, method=method)


def test_message_bits_measures_bits_back_methods_only() -> None:
    with pytest.raises(InvalidOptionError, match="measures a bits-back method"):
        bsw.api.message_bits(np.zeros((8, 8), np.uint8), method="auto")


def test_classical_files_never_load_torch(tmp_path) -> None:
    """Writing and reading a classical stream needs Pillow only (no model, no torch)."""
    import subprocess
    import sys

    script = (
        "import sys, numpy as np, bitswap_plugin as bsw\n"
        "a = np.zeros((40, 30, 3), np.uint8); a[::3] = 200\n"
        "data = bsw.compress(a, method='webp')\n"
        "assert (bsw.decompress(data) == a).all() and bsw.read_info(data).method == 'webp'\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
