"""The coder reaches the model's -ELBO: bits-back costs almost nothing on top."""

from __future__ import annotations

import numpy as np
import torch

import bitswap_plugin as bsw
from bitswap_plugin import container, zoo
from bitswap_plugin.integer_model import integer_neg_elbo
from bitswap_plugin.patches import PatchGrid

from conftest import kodak_image


def test_payload_is_within_one_percent_of_neg_elbo():
    image = kodak_image(23, (384, 256))[:, 64:320]  # a 256x256 photo
    data = bsw.compress(image)
    header, head, tail = container.unpack(data)
    payload_bits = 8 * (len(head) + len(tail))
    seed_bits = 8 * header.seed_length

    grid = PatchGrid(256, 256)
    patches = grid.extract(torch.from_numpy(image).permute(2, 0, 1), header.seed_patches, len(grid))
    model = zoo.load_model("tiny-rgb")
    torch.manual_seed(0)
    elbo_bits = np.mean([integer_neg_elbo(model, patches) for _ in range(4)]) * patches.numel()

    overhead = (payload_bits - seed_bits - elbo_bits) / elbo_bits
    assert -0.01 < overhead < 0.01, f"payload {payload_bits}, seed {seed_bits}, -ELBO {elbo_bits:.0f}: {overhead:+.2%}"
