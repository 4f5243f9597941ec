"""Step adjustments, fitted by the encoder and stored per model: log-scale offsets (format version 5 on) and
smooth-area blends (6 on)."""

from __future__ import annotations

import dataclasses
import struct
import zlib

import numpy as np
import pytest
import torch

import bitswap_plugin as bsw
from bitswap_plugin import api, container, zoo
from bitswap_plugin.ans import AnsCoder
from bitswap_plugin.coders import Plane, StepAdjustments, decode_planes, encode_planes, fit_adjustments
from bitswap_plugin.distributions import DiscretizedLogistic
from bitswap_plugin.errors import CorruptFileError
from bitswap_plugin.fileformat import VERSION, VERSIONS, StreamPlan, blend_code, smooth_blend
from bitswap_plugin.fixedpoint import LOG_SCALE_FRAC, MEAN_FRAC
from bitswap_plugin.polyphase import UNUSABLE, Pass, blend_means, neighbour_prediction


def test_a_rescaled_family_is_the_family_of_the_shifted_codes() -> None:
    gen = torch.Generator().manual_seed(3)
    mean = torch.randint(0, 255 << MEAN_FRAC, (500,), generator=gen)
    log_scale = torch.randint(-1 << LOG_SCALE_FRAC, 4 << LOG_SCALE_FRAC, (500,), generator=gen)
    symbols = torch.randint(0, 256, (500,), generator=gen)
    family = DiscretizedLogistic(mean, log_scale, 256)
    for offset in (-64, -7, 0, 5, 100):
        direct = DiscretizedLogistic(mean, log_scale + offset, 256).ranges(symbols)
        assert all(torch.equal(a, b) for a, b in zip(family.rescaled(offset).ranges(symbols), direct))
    nearest = (mean + (1 << (MEAN_FRAC - 1))) >> MEAN_FRAC
    sharper, wider = family.rescaled(-32).ranges(nearest)[1], family.rescaled(32).ranges(nearest)[1]
    assert bool((sharper >= family.ranges(nearest)[1]).all() and (wider <= family.ranges(nearest)[1]).all())


def _ramp(height: int, width: int) -> np.ndarray:
    """Clean content the photo-trained model overestimates the noise of."""
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([xx, yy, np.full_like(xx, 90)], -1).astype(np.uint8)


def test_clean_content_gets_sharper_distributions_blends_and_a_shorter_message() -> None:
    image = _ramp(192, 192)
    data = bsw.compress(image, method="bitswap")
    header = container.unpack(data)[0]
    model = zoo.load_model(header.models[0][0])
    (offsets,), (blends,) = header.plan.scale_offsets, header.plan.smooth_blends
    assert header.plan.version == VERSION and len(offsets) == len(blends) == model.likelihood_steps
    assert sum(offsets) < -10 * len(offsets)  # sharper than photographs' noise, on most steps
    assert sum(map(bool, blends)) > len(blends) / 2  # the neighbours' average beats the network's mean on a ramp
    np.testing.assert_array_equal(bsw.decompress(data), image)

    planes = [Plane(torch.from_numpy(image).permute(2, 0, 1).contiguous(), model)]
    lengths = {}
    for name, adjustments in (("none", None), ("fitted", StepAdjustments(offsets, blends))):
        adjustments = adjustments and {model: adjustments}
        plan, coder = encode_planes(planes, "bitswap", torch.device("cpu"), header.plan.seed_patches, adjustments=adjustments)
        lengths[name] = coder.bit_length()
        decoded = [Plane(torch.zeros_like(planes[0].pixels), model)]
        decode_planes(AnsCoder.from_bytes(*coder.to_bytes(), bottomless=False), decoded, plan, adjustments=adjustments)
        assert torch.equal(decoded[0].pixels, planes[0].pixels)
    assert lengths["fitted"] < 0.9 * lengths["none"]  # of a message mostly the chain's start-up (phantom words)


def test_the_fit_is_reproducible_and_stays_near_zero_on_photographs(photo) -> None:
    model = zoo.load_model(zoo.DEFAULT_MODELS[3])
    patches = torch.from_numpy(photo[:64, :64].copy()).permute(2, 0, 1).reshape(3, 2, 32, 2, 32).permute(1, 3, 0, 2, 4).reshape(4, 3, 32, 32)
    fits = fit_adjustments(model, patches.long(), torch.Generator().manual_seed(0))
    assert fits == fit_adjustments(model, patches.long(), torch.Generator().manual_seed(0))
    (offsets, saved), (both, saved_both) = fits
    assert offsets.blends == () and len(offsets.offsets) == len(both.blends) == model.likelihood_steps
    assert 0 <= saved <= saved_both and max(map(abs, offsets.offsets)) < 64  # what the model was trained on needs little correction
    assert not any(both.blends[:3])  # the first pass has no decoded neighbours
    (no_context,) = fit_adjustments(zoo.load_model("bitswap-rgb"), patches.long(), torch.Generator().manual_seed(0))
    assert no_context[0].blends == ()


def test_a_small_image_keeps_its_adjustments_only_where_they_shorten_its_file(photo, monkeypatch) -> None:
    def stream(image: np.ndarray) -> tuple[int, StreamPlan]:
        data = bsw.compress(image, method="bitswap")
        np.testing.assert_array_equal(bsw.decompress(data), image)
        return len(data), container.unpack(data)[0].plan

    noisy_ramp = (_ramp(64, 96) + np.random.default_rng(5).integers(0, 3, (64, 96, 3))).astype(np.uint8)
    for image in (photo[:32, :32], photo[:64, :64], photo, noisy_ramp):
        fitted, plan = stream(np.ascontiguousarray(image))
        if not plan.group_sizes:
            assert plan.scale_offsets == [()] and plan.smooth_blends == [()]  # the seed holds every patch
        with monkeypatch.context() as patch:
            patch.setattr(api, "_adjustments", lambda planes: {})
            plain, _ = stream(np.ascontiguousarray(image))
        assert fitted <= plain
    assert plan.group_sizes and any(plan.smooth_blends[0]) and fitted < 0.95 * plain  # where they pay, they stay


def test_offsets_that_do_not_fit_the_model_are_corrupt(photo) -> None:
    data = bsw.compress(photo, method="bitswap")
    header, head, tail = container.unpack(data)
    steps = zoo.load_model(header.models[0][0]).likelihood_steps
    for field, value, match in (("scale_offsets", [(1,) * (steps - 1)], "scale offsets"), ("smooth_blends", [(0,) * (steps + 1)], "blends")):
        plan = dataclasses.replace(header.plan, **{field: value})
        with pytest.raises(CorruptFileError, match=match):
            bsw.decompress(container.pack(dataclasses.replace(header, plan=plan), head, tail))
    header.plan.scale_offsets = [(-40,) * steps]  # the right count, other offsets: the stream no longer decodes
    with pytest.raises(CorruptFileError):
        bsw.decompress(container.pack(header, head, tail))


def test_blends_for_a_model_without_pixel_context_or_its_first_pass_are_corrupt(photo) -> None:
    data = bsw.compress(photo[:64, :64], model="bitswap-rgb", method="bitswap")
    header, head, tail = container.unpack(data)
    header.plan.smooth_blends = [(blend_code(2, 8),) * zoo.load_model("bitswap-rgb").likelihood_steps]
    with pytest.raises(CorruptFileError, match="blends"):
        bsw.decompress(container.pack(header, head, tail))
    data = bsw.compress(photo[:64, :64], method="bitswap")
    header, head, tail = container.unpack(data)  # the encoder may store no adjustments for so small an image
    header.plan.smooth_blends = [(blend_code(9, 16),) * zoo.load_model(header.models[0][0]).likelihood_steps]
    with pytest.raises(CorruptFileError, match="no decoded neighbours"):
        bsw.decompress(container.pack(header, head, tail))


def test_what_each_version_stores() -> None:
    def header(version: int, offsets: list, blends: list = ()) -> container.Header:
        plan = StreamPlan("bitswap", seed_patches=1, seed_length=100, group_sizes=[3], lanes_added=[8],
                          scale_offsets=offsets, smooth_blends=list(blends), version=VERSIONS[version])
        return container.Header(height=64, width=64, mode="L", pixel_crc=0, frames=1, stack=False, channel_axis=False,
                                models=[("m", "00" * 32)], plane_models=[0], plan=plan, num_lanes=8)

    stored = container.read_header(container.pack(header(5, [(-128, 0, 127)]), b"", b""))[0]
    assert stored.plan.scale_offsets == [(-128, 0, 127)] and stored.plan.smooth_blends == []
    assert container.read_header(container.pack(header(5, []), b"", b""))[0].plan.scale_offsets == [()]
    stored = container.read_header(container.pack(header(6, [(1, 2)], [(0, blend_code(9, 16))]), b"", b""))[0]
    assert stored.plan.scale_offsets == [(1, 2)] and stored.plan.smooth_blends == [(0, 0x9F)]
    assert container.read_header(container.pack(header(6, []), b"", b""))[0].plan.smooth_blends == [()]
    with pytest.raises(ValueError, match="signed bytes"):
        container.pack(header(5, [(128,)]), b"", b"")
    with pytest.raises(ValueError, match="version 4 cannot store scale offsets"):
        container.pack(header(4, [(1,)]), b"", b"")
    with pytest.raises(ValueError, match="version 5 cannot store smooth-area blends"):
        container.pack(header(5, [], [(0x11,)]), b"", b"")
    with pytest.raises(ValueError, match="invalid smooth-area blend"):
        container.pack(header(6, [], [(0xA0,)]), b"", b"")
    body = bytearray(container.pack(header(6, [(1,)], [(0x11,)]), b"", b"")[:-4])  # no lane heads or tail: the header CRC ends it
    body[body.index(bytes([1, 1, 1, 0x11])) + 3] = 0x0F  # a weight without a threshold level
    with pytest.raises(CorruptFileError, match="invalid smooth-area blend 15"):
        container.read_header(bytes(body) + struct.pack("<I", zlib.crc32(body)))


def test_a_blend_byte_is_a_threshold_level_and_a_weight() -> None:
    assert smooth_blend(0) is None
    assert [smooth_blend(blend_code(level, weight)) for level, weight in ((1, 1), (5, 8), (9, 16))] == [(1, 1), (16, 8), (256, 16)]
    for code in (0x01, 0x0F, 0xA0, 0xFF, 256):
        with pytest.raises(ValueError):
            smooth_blend(code)


def test_neighbour_predictions_read_only_what_earlier_passes_decoded() -> None:
    x = torch.arange(64, dtype=torch.int64).reshape(1, 1, 8, 8) * 3
    a_then_b = Pass("pass.1", 0, (0,), (1,))  # B (0, 1) after A: left and right are A's, up and down D's
    target, spread = neighbour_prediction(x, None, a_then_b, 1)
    assert target.shape == (1, 1, 4, 4)
    assert target[0, 0, 1, 1] == (x[0, 0, 2, 2] + x[0, 0, 2, 4]) * 256 // 2 and spread[0, 0, 1, 1] == 6
    assert spread[0, 0, 1, 3] == UNUSABLE and target[0, 0, 1, 3] == x[0, 0, 2, 6] * 256  # the patch's edge: one neighbour
    last = Pass("pass.3", 0, (0, 1, 2), (3,))  # D (1, 1): up and down are B's, left and right C's
    target, spread = neighbour_prediction(x, None, last, 3)
    assert target[0, 0, 1, 1] == (x[0, 0, 2, 3] + x[0, 0, 4, 3] + x[0, 0, 3, 2] + x[0, 0, 3, 4]) * 256 // 4 and spread[0, 0, 1, 1] == 48
    known = torch.zeros_like(x, dtype=torch.bool)
    known[..., 4, :] = True  # padding is no neighbour
    target, spread = neighbour_prediction(x, known, last, 3)
    assert target[0, 0, 1, 1] == (x[0, 0, 2, 3] + x[0, 0, 3, 2] + x[0, 0, 3, 4]) * 256 // 3 and spread[0, 0, 1, 1] == 27
    assert neighbour_prediction(x, None, Pass("pass.1", 0, (0,), (3,)), 3) is None  # D after A alone: B and C come later
    coarse = Pass("pass.0.2", 1, (0, 1), (2,))  # C of the level-1 image (every other pixel): up and down are its A's
    target, _ = neighbour_prediction(x, None, coarse, 2)
    assert target.shape == (1, 1, 2, 2) and target[0, 0, 0, 0] == (x[0, 0, 0, 0] + x[0, 0, 4, 0]) * 256 // 2


def test_a_blend_moves_means_by_its_weight_where_the_neighbours_agree() -> None:
    mean, target, spread = torch.tensor([1000, 1000, -7, 5000]), torch.tensor([2000, 2000, 9, 0]), torch.tensor([3, 4, 0, UNUSABLE])
    assert blend_means(mean, (target, spread), 3, 8).tolist() == [1500, 1000, 1, 5000]
    assert blend_means(mean, (target, spread), 256, 16).tolist() == [2000, 2000, 9, 5000]
    per_symbol = blend_means(mean, (target, spread), torch.tensor([-1, 4, 0, 256]), torch.tensor([16, 4, 3, 16]))
    assert per_symbol.tolist() == [1000, 1250, -7 + (16 * 3 >> 4), 5000]
