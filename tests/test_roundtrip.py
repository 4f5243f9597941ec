"""Bit-exact round trips through compress/decompress, every mode, size and method."""

from __future__ import annotations

import numpy as np
import pytest

import bitswap_plugin as bsw
from bitswap_plugin import coders, container, zoo

SIZES = [(1, 1), (1, 33), (33, 1), (31, 31), (32, 32), (33, 65)]
CHANNELS = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}


def _image(kind: str, shape: tuple[int, ...], rng: np.random.Generator, photo: np.ndarray) -> np.ndarray:
    if kind == "noise":
        return rng.integers(0, 256, shape, dtype=np.uint8)
    if kind == "constant":
        return np.full(shape, 173, np.uint8)
    if kind == "gradient":
        h, w = shape[:2]
        ramp = (np.add.outer(np.arange(h) * 7, np.arange(w) * 3) % 256).astype(np.uint8)
        return np.broadcast_to(ramp.reshape(h, w, *([1] * (len(shape) - 2))), shape).copy()
    tiled = np.resize(photo, (max(shape[0], 1), max(shape[1], 1), 3))[: shape[0], : shape[1]]
    channels = shape[2] if len(shape) == 3 else 1
    if channels == 1:
        return tiled[:, :, 1].copy().reshape(shape)
    extra = [tiled[:, :, 0] // 2 + 64] if channels in (2, 4) else []
    base = [tiled[:, :, 1]] if channels == 2 else [tiled[:, :, c] for c in range(3)]
    return np.stack(base + extra, axis=2)


def _shape(size: tuple[int, int], mode: str) -> tuple[int, ...]:
    return size if mode == "L" else (*size, CHANNELS[mode])


@pytest.mark.parametrize("mode", list(CHANNELS))
@pytest.mark.parametrize("size", SIZES)
def test_every_size_and_mode_round_trips(size, mode, rng, photo):
    image = _image("photo", _shape(size, mode), rng, photo)
    data = bsw.compress(image, method="bitswap")  # the learned coder at every edge (auto: test_fallback)
    out = bsw.decompress(data)
    assert out.dtype == np.uint8 and out.shape == image.shape
    np.testing.assert_array_equal(out, image)


@pytest.mark.parametrize("method", ["bitswap", "bbans"])
@pytest.mark.parametrize("kind", ["noise", "constant", "gradient", "photo"])
def test_contents_and_methods_round_trip(kind, method, rng, photo):
    image = _image(kind, (70, 100, 3), rng, photo)
    data = bsw.compress(image, method=method)
    assert bsw.read_info(data).method == method
    np.testing.assert_array_equal(bsw.decompress(data), image)


@pytest.mark.parametrize("method", ["bitswap", "bbans"])
def test_rgba_and_la_photo_with_alpha_round_trip(method, photo):
    alpha = np.linspace(0, 255, photo.shape[1], dtype=np.uint8)[None, :].repeat(photo.shape[0], 0)
    for image in (np.dstack([photo, alpha]), np.dstack([photo[:, :, 0], alpha])):
        np.testing.assert_array_equal(bsw.decompress(bsw.compress(image, method=method)), image)


@pytest.mark.parametrize("shape", [(64, 96), (64, 96, 1), (5, 64, 40), (5, 64, 40, 1), (2, 64, 40, 3)])
def test_every_array_shape_comes_back_as_it_went_in(shape, photo):
    """(H, W), (H, W, 1), (N, H, W) grey stacks (a last axis over 4), (N, H, W, C) stacks."""
    frames = np.stack([np.roll(photo[:, :40], 7 * k, axis=0) for k in range(5)])
    image = {2: photo[:, :, 1], 3: frames[..., 1] if shape[0] == 5 else photo[:, :, :1]}.get(len(shape))
    if image is None:
        image = frames[: shape[0], ..., : shape[3]]
    image = np.ascontiguousarray(image).reshape(shape)
    data = bsw.compress(image)
    assert bsw.read_info(data).shape == shape
    out = bsw.decompress(data)
    assert out.shape == shape
    np.testing.assert_array_equal(out, image)


def test_compression_is_deterministic(photo):
    assert bsw.compress(photo) == bsw.compress(photo)
    assert bsw.compress(photo, method="bitswap") == bsw.compress(photo, method="bitswap")


def test_photo_compresses_better_than_raw_and_noise_does_not_explode(rng, photo):
    image = np.resize(photo, (128, 128, 3))
    info = bsw.read_info(bsw.compress(image))
    assert info.bits_per_subpixel < 6.0
    noise = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert bsw.read_info(bsw.compress(noise)).bits_per_subpixel < 9.5


def test_read_info_reports_header(photo):
    data = bsw.compress(photo, method="bitswap")
    info = bsw.read_info(data)
    assert (info.height, info.width, info.mode) == (64, 96, "RGB")
    assert info.shape == photo.shape
    assert info.size == len(data)
    assert info.models[0][0] == zoo.DEFAULT_MODELS[3] and len(info.models[0][1]) == 64
    assert bsw.read_info(data[:200]).height == 64  # the header alone is enough


def test_batch_size_does_not_change_the_result(photo):
    data = bsw.compress(np.resize(photo, (100, 130, 3)), method="bitswap")
    a = bsw.decompress(data, batch_size=1)
    b = bsw.decompress(data, batch_size=64)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("channels", [1, 4])
def test_stack_is_one_chain_and_keeps_its_shape(channels, photo):
    frames = np.stack([np.roll(photo, 11 * k, axis=1) for k in range(6)])
    stack = frames[..., :channels] if channels < 4 else np.concatenate([frames, frames[..., :1]], axis=3)
    data = bsw.compress(stack, method="bitswap")
    info = bsw.read_info(data)
    assert (info.frames, info.stack, info.shape) == (6, True, stack.shape)
    np.testing.assert_array_equal(bsw.decompress(data), stack)
    header = container.unpack(data)[0]
    patches_per_frame = 6  # 96x64
    assert header.plan.seed_patches <= coders.MAX_SEED_PATCHES  # one seed for the whole stack, not one a frame
    assert max(header.plan.group_sizes) > patches_per_frame  # groups run across frames


@pytest.mark.parametrize("kind", ["grey RGB", "RGBA"])
def test_progress_counts_the_patches_of_the_planes_coded(kind, photo):
    """Progress goes up to the patches the coder codes: one plane for an RGB image whose channels
    are equal, two for RGBA (colour and alpha), never the image's channel count."""
    colour = np.resize(photo, (128, 160, 3))  # 20 patches a plane: more than a small image, which may seed them all
    image = np.repeat(colour[..., 1:2], 3, axis=2) if kind == "grey RGB" else np.dstack([colour, colour[..., 0] // 2 + 64])
    calls: dict[str, list[tuple[int, int]]] = {"compress": [], "decompress": []}
    data = bsw.compress(image, method="bitswap", progress=lambda *call: calls["compress"].append(call))
    plan = container.unpack(data)[0].plan
    patches = (1 if kind == "grey RGB" else 2) * 20 - plan.seed_patches  # the seed's patches aside
    np.testing.assert_array_equal(bsw.decompress(data, progress=lambda *call: calls["decompress"].append(call)), image)
    for seen in calls.values():
        assert {total for _, total in seen} == {patches} and seen[-1] == (patches, patches)
        assert [done for done, _ in seen] == sorted({done for done, _ in seen})  # strictly rising
