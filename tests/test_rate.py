"""The coder reaches the model's -ELBO: bits-back costs almost nothing on top."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

import bitswap_plugin as bsw
from bitswap_plugin import container, zoo
from bitswap_plugin.distributions import TOTAL
from bitswap_plugin.integer_model import integer_neg_elbo
from bitswap_plugin.patches import PatchGrid

from conftest import kodak_image

SAMPLE = Path(bsw.__file__).resolve().parent / "samples" / "astronaut.png"


def _start_up_bits(model, patch: torch.Tensor) -> float:
    """Information in one patch's posterior latents: the most the seed may fail to feed."""
    bits, below = 0.0, patch
    for level in range(model.config.latent_layers):
        q = model.posterior(level, below)
        z = q.search(torch.randint(0, TOTAL, (len(q),)))
        bits += float(q.information(z).sum())
        below = z.view(model.config.latent_shape(1))
    return bits


def test_payload_is_within_one_percent_of_neg_elbo_plus_start_up():
    image = kodak_image(23, (384, 256))[:, 64:320]  # a 256x256 photo
    data = bsw.compress(image, method="bitswap")
    header, head, tail = container.unpack(data)
    payload_bits = 8 * (len(head) + len(tail))

    grid = PatchGrid(256, 256)
    patches = grid.extract(torch.from_numpy(image.copy()).permute(2, 0, 1), header.plan.seed_patches, len(grid))
    model = zoo.load_model(zoo.DEFAULT_MODELS[3])
    torch.manual_seed(0)
    elbo_bits = np.mean([integer_neg_elbo(model, patches) for _ in range(4)]) * patches.numel()
    fixed_bits = 8 * header.plan.seed_length + _start_up_bits(model, patches[:1])

    overhead = (payload_bits - fixed_bits - elbo_bits) / elbo_bits
    assert overhead < 0.01, f"payload {payload_bits}, fixed {fixed_bits:.0f}, -ELBO {elbo_bits:.0f}: {overhead:+.2%}"
    assert payload_bits > elbo_bits * 0.99  # no free lunch: the estimate and the file agree


def test_a_larger_seed_feeds_the_start_up_where_the_first_patches_are_flat():
    """A flat first patch deflates to a few bytes, so the first pops would read phantom words, a
    random sample the file carries without getting back (some 20,000 bits): compress seeds more
    patches, and the message comes out smaller than with the one-patch seed (by 11,000 bits with
    polyphase-rgb-l3-5: the phantom words less what the extra deflated patches cost)."""
    with Image.open(SAMPLE) as sample:
        image = np.array(sample.convert("RGB"))[:128, :160]  # 20 patches: too many to deflate all
    image[:32, :64] = (90, 120, 150)
    data = bsw.compress(image, method="bitswap")
    header, head, tail = container.unpack(data)
    assert header.plan.seed_patches > 1
    assert 8 * (len(head) + len(tail)) < 0.97 * bsw.api.message_bits(image)
    np.testing.assert_array_equal(bsw.decompress(data), image)
