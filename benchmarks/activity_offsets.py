"""Would log-scale offsets per activity class pay? A what-if for the encoder's step adjustments.

    python benchmarks/activity_offsets.py [--model polyphase-rgb-l4-mix3-2] [--val-dir runs/data/val]
                                          [--edges 1 3 7 15 31] [--json OUT]

Format 5 on, the encoder fits one log-scale offset per likelihood step (pass,
subimage, channel) on an evenly spaced sample of an image's patches and
stores it in the header (:func:`bitswap_plugin.coders.fit_adjustments`). A
per-image correction that also depends on the local activity, as the context
classes of JPEG-LS or JPEG-XL's trees do, could fit the model to an image more
closely. Here the classes are those of each pixel's decoded-neighbour spread
(``polyphase.neighbour_prediction``: max - min of the neighbours, in pixel
values; pixels without two neighbours form a class of their own), cut at
``--edges``, one offset per (step, class).

For each held-out photo (never Kodak), cropped to at most 512x768, with the
offsets' own descent (:data:`~bitswap_plugin.coders.SCALE_OFFSET_MOVES`) and one
posterior sample, it reports bits per subpixel of the likelihood's symbols:

* ``none``: no offsets;
* ``step``: per-step offsets fitted on the encoder's sample
  (``api._FIT_FROM_PATCHES`` patches), applied to every patch, plus a byte per
  offset: what format 6 does (without its smooth-area blends);
* ``class``: per-(step, class) offsets fitted the same way, plus a byte each;
* ``class, fitted on all``: the same fitted on every patch, without header
  bytes: the most such offsets could give.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bitswap_plugin import api, zoo
from bitswap_plugin.coders import SCALE_OFFSET_MOVES, _JointSteps, joint_steps
from bitswap_plugin.fixedpoint import CODE_LENGTH_FRAC
from bitswap_plugin.integer_model import IntegerVAE
from model_report import validation_paths

CROP = (512, 768)


def by_class(steps: _JointSteps, edges: torch.Tensor) -> _JointSteps:
    """``steps`` with each (step, class of the neighbour spread cut at ``edges``) a step of its own."""
    classes = torch.bucketize(steps.prediction[1], edges)
    return _JointSteps(steps.step_of * (len(edges) + 1) + classes, steps.mean, steps.log_scale, steps.symbols, steps.num_bins,
                       steps.prediction, steps.weights)


def fitted(steps: _JointSteps, count: int) -> torch.Tensor:
    """Offsets from the encoder's descent over ``count`` steps."""
    none = torch.zeros(count, dtype=torch.int64)
    return steps.descend(none, steps.mean, steps.lengths(none, steps.mean), SCALE_OFFSET_MOVES)[0]


def bits(steps: _JointSteps, offsets: torch.Tensor) -> float:
    return int(steps.lengths(offsets, steps.mean).sum()) / (1 << CODE_LENGTH_FRAC)


def measure(model: IntegerVAE, image: np.ndarray, edges: torch.Tensor) -> dict[str, float]:
    """Bits of each row of the module docstring for one (H, W, C) image."""
    plane = api._planes(image[None], "L" if image.shape[2] == 1 else "RGB", [model.config.name], torch.device("cpu"))[0]
    total = len(plane.grid)
    x = plane.grid.extract(plane.pixels, 0, total)
    chosen = torch.from_numpy(np.unique(np.linspace(0, total - 1, min(api._FIT_FROM_PATCHES, total)).round().astype(int)))
    classes, count = len(edges) + 1, model.likelihood_steps
    with torch.no_grad():
        sample, everything = (joint_steps(model, part, torch.Generator().manual_seed(0)) for part in (x[chosen], x))
    classed = by_class(everything, edges)
    return {
        "none": bits(everything, torch.zeros(count, dtype=torch.int64)),
        "step": bits(everything, fitted(sample, count)) + 8 * count,
        "class": bits(classed, fitted(by_class(sample, edges), count * classes)) + 8 * count * classes,
        "class, fitted on all": bits(classed, fitted(classed, count * classes)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="polyphase-rgb-l4-mix3-2")
    parser.add_argument("--val-dir", type=Path, help="folder of held-out photos (default: photos-large's val.txt)")
    parser.add_argument("--edges", type=int, nargs="+", default=[1, 3, 7, 15, 31], help="upper spreads of the classes")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    model = zoo.load_model(args.model)
    edges = torch.tensor(args.edges)
    rows, totals, subpixels = [], dict.fromkeys(("none", "step", "class", "class, fitted on all"), 0.0), 0
    for path in validation_paths(args.val_dir):
        image = np.asarray(Image.open(path).convert("L" if model.config.channels == 1 else "RGB"))[: CROP[0], : CROP[1]]
        image = np.ascontiguousarray(image.reshape(*image.shape[:2], -1))
        row = measure(model, image, edges)
        rows.append({"image": path.name, "shape": list(image.shape), **{k: v / image.size for k, v in row.items()}})
        totals = {k: totals[k] + row[k] for k in totals}
        subpixels += image.size
        print(path.name, image.shape, "  ".join(f"{k} {v / image.size:.4f}" for k, v in row.items()), flush=True)
    summary = {k: v / subpixels for k, v in totals.items()}
    summary["class against step, %"] = 100 * (totals["class"] / totals["step"] - 1)
    print("all:", "  ".join(f"{k} {v:.4f}" for k, v in summary.items()))
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "edges": args.edges, "summary": summary, "images": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
