"""Format version 5: log-scale offsets per likelihood step, fitted by the encoder and stored per model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import bitswap_plugin as bsw
from bitswap_plugin import container, zoo
from bitswap_plugin.ans import AnsCoder
from bitswap_plugin.coders import Plane, decode_planes, encode_planes, fit_scale_offsets
from bitswap_plugin.distributions import DiscretizedLogistic
from bitswap_plugin.errors import CorruptFileError
from bitswap_plugin.fileformat import VERSIONS, StreamPlan
from bitswap_plugin.fixedpoint import LOG_SCALE_FRAC, MEAN_FRAC


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


def test_clean_content_gets_sharper_distributions_and_a_shorter_message() -> None:
    image = _ramp(192, 192)
    data = bsw.compress(image, method="bitswap")
    header = container.unpack(data)[0]
    model = zoo.load_model(header.models[0][0])
    (offsets,) = header.plan.scale_offsets
    assert header.plan.version.number == 5 and len(offsets) == model.likelihood_steps
    assert sum(offsets) < -10 * len(offsets)  # sharper than photographs' noise, on most steps
    np.testing.assert_array_equal(bsw.decompress(data), image)

    planes = [Plane(torch.from_numpy(image).permute(2, 0, 1).contiguous(), model)]
    lengths = {}
    for name, scale_offsets in (("none", None), ("fitted", {model: offsets})):
        plan, coder = encode_planes(planes, "bitswap", torch.device("cpu"), header.plan.seed_patches, scale_offsets=scale_offsets)
        lengths[name] = coder.bit_length()
        decoded = [Plane(torch.zeros_like(planes[0].pixels), model)]
        decode_planes(AnsCoder.from_bytes(*coder.to_bytes(), bottomless=False), decoded, plan, scale_offsets=scale_offsets)
        assert torch.equal(decoded[0].pixels, planes[0].pixels)
    assert lengths["fitted"] < 0.95 * lengths["none"]  # of a message mostly the chain's start-up (phantom words)


def test_the_fit_is_reproducible_and_stays_near_zero_on_photographs(photo) -> None:
    model = zoo.load_model(zoo.DEFAULT_MODELS[3])
    patches = torch.from_numpy(photo[:64, :64].copy()).permute(2, 0, 1).reshape(3, 2, 32, 2, 32).permute(1, 3, 0, 2, 4).reshape(4, 3, 32, 32)
    first = fit_scale_offsets(model, patches.long(), torch.Generator().manual_seed(0))
    assert first == fit_scale_offsets(model, patches.long(), torch.Generator().manual_seed(0))
    offsets, saved = first
    assert saved >= 0 and max(map(abs, offsets)) < 64  # what the model was trained on needs little correction


def test_offsets_that_do_not_fit_the_model_are_corrupt(photo) -> None:
    data = bsw.compress(photo, method="bitswap")
    header, head, tail = container.unpack(data)
    steps = zoo.load_model(header.models[0][0]).likelihood_steps
    header.plan.scale_offsets = [(1,) * (steps - 1)]
    with pytest.raises(CorruptFileError, match="scale offsets"):
        bsw.decompress(container.pack(header, head, tail))
    header.plan.scale_offsets = [(-40,) * steps]  # the right count, other offsets: the stream no longer decodes
    with pytest.raises(CorruptFileError):
        bsw.decompress(container.pack(header, head, tail))


def test_only_version_5_stores_offsets_and_only_signed_bytes() -> None:
    def header(version: int, offsets: list) -> container.Header:
        plan = StreamPlan("bitswap", seed_patches=1, seed_length=100, group_sizes=[3], lanes_added=[8],
                          scale_offsets=offsets, version=VERSIONS[version])
        return container.Header(height=64, width=64, mode="L", pixel_crc=0, frames=1, stack=False, channel_axis=False,
                                models=[("m", "00" * 32)], plane_models=[0], plan=plan, num_lanes=8)

    stored = container.read_header(container.pack(header(5, [(-128, 0, 127)]), b"", b""))[0]
    assert stored.plan.scale_offsets == [(-128, 0, 127)]
    assert container.read_header(container.pack(header(5, []), b"", b""))[0].plan.scale_offsets == [()]
    with pytest.raises(ValueError, match="signed bytes"):
        container.pack(header(5, [(128,)]), b"", b"")
    with pytest.raises(ValueError, match="version 4 cannot store scale offsets"):
        container.pack(header(4, [(1,)]), b"", b"")
