"""Would the likelihood's scales pay for local adjustment? Per-patch log-scale offsets against the per-file ones.

    python benchmarks/local_offsets.py [--model polyphase-rgb-l3-8] [--val-dir runs/data/val] [--every 3] [--json OUT]

A ``.bsw`` stream already carries one log-scale offset (and one smooth-area
blend) per likelihood step, fitted to the whole image
(:func:`bitswap_plugin.coders.fit_adjustments`). This measures what a finer
grain would add: on held-out photos (every ``--every``-th of ``--val-dir``,
default photos-large's ``val.txt``; never Kodak), cut to whole 32x32 patches,
with one posterior sample of z1 (the encoder's adjustment fit draws the same
one), it gives the exact code length of the pixels in bits per subpixel

* with the per-file adjustments (what the file pays, less the latents),
* with each patch also choosing the best of :data:`EXTRA_OFFSETS` on top of
  them, for all its steps at once, or per polyphase level,

the latter two plus the side information the choices would cost at a flat
``log2(len(EXTRA_OFFSETS))`` bits each (an upper bound: an entropy coder
would pay less where the choices are skewed).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bitswap_plugin import zoo
from bitswap_plugin.coders import fit_adjustments, posterior_sample
from bitswap_plugin.distributions import DiscretizedLogistic
from bitswap_plugin.fixedpoint import CODE_LENGTH_FRAC, code_length
from bitswap_plugin.patches import PATCH, PatchGrid
from bitswap_plugin.polyphase import pass_plan
from model_report import validation_paths

EXTRA_OFFSETS = (-48, -32, -16, -8, 0, 8, 16, 32, 48)
"""Log-scale offsets a patch may add to the per-file ones (1/64 nats: e**+-0.75 at most)."""


def patch_lengths(model, x: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Bits per patch of patches ``x`` with each extra offset, (offsets, patches), in all and per
    polyphase level, under the per-file adjustments ``compress`` would fit to them."""
    adjustments = fit_adjustments(model, x, torch.Generator().manual_seed(seed))[-1][0]
    z1 = posterior_sample(model, x, torch.Generator().manual_seed(seed))
    depths = [p.depth for p in pass_plan(model.config) for _ in p.subimages for _ in range(model.config.channels)]
    total = torch.zeros(len(EXTRA_OFFSETS), x.shape[0], dtype=torch.float64)
    by_level: dict[int, torch.Tensor] = {}
    steps = model.likelihood(z1).steps(x, adjustments.blends)
    for (index, family), offset, depth in zip(steps, adjustments.offsets, depths, strict=True):
        for j, extra in enumerate(EXTRA_OFFSETS):
            rescaled = DiscretizedLogistic(family.mean, family.log_scale + offset + extra, family.num_bins)
            bits = code_length(rescaled.ranges(x[index].reshape(family.mean.shape))[1]).double() / (1 << CODE_LENGTH_FRAC)
            per_patch = bits.reshape(x.shape[0], -1).sum(1)
            total[j] += per_patch
            by_level.setdefault(depth, torch.zeros_like(total))[j] += per_patch
    return total, by_level


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=zoo.DEFAULT_MODELS[3])
    parser.add_argument("--val-dir", type=Path, help="folder of held-out photos (default: photos-large's val.txt)")
    parser.add_argument("--every", type=int, default=3, help="take every this many-th photo (default 3)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = zoo.load_model(args.model)
    mode = "RGB" if model.config.channels == 3 else "L"
    side = math.log2(len(EXTRA_OFFSETS))
    sums = {"subpixels": 0, "per_file": 0.0, "per_patch": 0.0, "per_patch_and_level": 0.0}
    photos = validation_paths(args.val_dir)[:: args.every]
    for path in photos:
        pixels = np.asarray(Image.open(path).convert(mode))
        pixels = pixels.reshape(*pixels.shape[:2], -1)
        h, w = pixels.shape[0] // PATCH * PATCH, pixels.shape[1] // PATCH * PATCH
        if not h or not w:
            continue
        plane = torch.from_numpy(np.ascontiguousarray(pixels[:h, :w].transpose(2, 0, 1)))
        grid = PatchGrid(h, w)
        total, by_level = patch_lengths(model, grid.extract(plane, 0, len(grid)))
        sums["subpixels"] += plane.numel()
        sums["per_file"] += float(total[EXTRA_OFFSETS.index(0)].sum())
        sums["per_patch"] += float(total.min(0).values.sum()) + len(grid) * side
        sums["per_patch_and_level"] += float(sum(v.min(0).values for v in by_level.values()).sum()) + len(grid) * len(by_level) * side
    result = {"model": args.model, "photos": len(photos), "extra_offsets": EXTRA_OFFSETS, "side_bits_per_choice": side,
              **{k: v / sums["subpixels"] for k, v in sums.items() if k != "subpixels"}, "subpixels": sums["subpixels"]}
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
