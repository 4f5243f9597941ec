"""What a model's latents and likelihood carry: -ELBO terms per latent layer, on photos and on smooth content.

    python benchmarks/model_report.py --models bitswap-rgb polyphase-rgb [--val-dir runs/data/val] [--json OUT]

For each model, on

* validation patches: fixed 32x32 crops (seed 12345) of the held-out photos
  (``--val-dir``, default ``photos-large``'s ``val.txt`` files; never Kodak);
* synthetic 256x256 images: flat mid-grey, all zero, a horizontal ramp, a
  smooth 2-D gradient — the file a user gets (``bitswap_plugin.compress``,
  the method forced, no fallback) beside the -ELBO terms,

it reports bits per subpixel: the reconstruction term, the KL of each latent
layer (a layer whose KL is ~0 has collapsed to its prior) and their sum; for
a polyphase model, the reconstruction of each pass too (which pixels cost).
Per latent layer it also gives, in bits per patch, the KL of each channel and
the posterior information: what popping the layer from an empty message takes,
which the chain's start-up pays where no earlier bits can feed the pops.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import bitswap_plugin as bsw
from bitswap_plugin import zoo
from bitswap_plugin.architecture import SQUEEZE
from bitswap_plugin.integer_model import IntegerVAE, integer_elbo_terms
from bitswap_plugin.polyphase import PolyphaseVAE, pass_plan, pixel_slices
from bitswap_plugin.patches import PatchGrid

ROOT = Path(__file__).resolve().parents[1]
LARGE = ROOT.parent / "shared" / "datasets" / "photos-large"


def validation_patches(paths: list[Path], count: int, gray: bool, size: int = 32) -> torch.Tensor:
    """``count`` fixed random ``size`` x ``size`` crops of the images (those at least that large),
    (n, C, size, size) uint8."""
    rng = np.random.default_rng(12345)
    images = [np.asarray(Image.open(p).convert("L" if gray else "RGB")) for p in paths]
    images = [image for image in images if min(image.shape[:2]) >= size]
    out = []
    for _ in range(count):
        image = images[rng.integers(len(images))]
        y, x = rng.integers(0, image.shape[0] - size + 1), rng.integers(0, image.shape[1] - size + 1)
        crop = image[y : y + size, x : x + size]
        out.append(crop[None] if gray else crop.transpose(2, 0, 1))
    return torch.from_numpy(np.stack(out))


def validation_paths(val_dir: Path | None) -> list[Path]:
    """The held-out photos: those in ``val_dir``, or photos-large's ``val.txt``."""
    if val_dir:
        return sorted(val_dir.iterdir())
    return [LARGE / line.strip() for line in (LARGE / "val.txt").read_text().splitlines() if line.strip()]


def synthetic(channels: int) -> dict[str, np.ndarray]:
    """Flat and smooth 256x256 images (H, W[, C])."""
    ramp = np.tile(np.arange(256, dtype=np.uint8), (256, 1))
    yy, xx = np.mgrid[0:256, 0:256]
    gradient = (96 + 60 * np.sin(yy / 80.0) + 50 * np.cos(xx / 70.0)).astype(np.uint8)
    images = {"flat grey": np.full((256, 256), 128, np.uint8), "zeros": np.zeros((256, 256), np.uint8),
              "ramp": ramp, "gradient": gradient}
    return {name: image if channels == 1 else np.repeat(image[..., None], 3, 2) for name, image in images.items()}


def terms(model: IntegerVAE, patches: torch.Tensor) -> dict:
    """-ELBO terms in bits per subpixel (one latent sample per patch, seed 0); for a polyphase
    model also the reconstruction per pass: bits per subpixel of the pass's own pixels, and its
    share of the whole (which sums to ``recon``)."""
    generator = torch.Generator().manual_seed(0)
    recon, kl, steps = 0.0, [0.0] * model.config.latent_layers, []
    channels = torch.zeros(model.config.latent_layers, 2, model.config.latent_channels, dtype=torch.float64)
    for start in range(0, patches.shape[0], 256):
        parts: list[torch.Tensor] = []
        r, k = integer_elbo_terms(model, patches[start : start + 256], generator, steps, parts)
        recon, kl, channels = recon + r, [a + b for a, b in zip(kl, k)], channels + torch.stack(parts)
    n = patches.numel()
    per_patch = channels / patches.shape[0]
    out = {"neg_elbo": (recon + sum(kl)) / n, "recon": recon / n, "kl": [k / n for k in kl],
           "kl_per_channel_bits_per_patch": per_patch[:, 0].tolist(),
           "posterior_information_bits_per_patch": per_patch[:, 1].sum(1).tolist()}
    if isinstance(model, PolyphaseVAE):
        out["recon_by_pass"] = by_pass(model, steps, n)
    return out


def by_pass(model: PolyphaseVAE, steps: list, subpixels: int) -> dict[str, dict[str, float]]:
    """The likelihood's steps' bits gathered per pass (a step's pixels name their subimage)."""
    plan = pass_plan(model.config)
    owner = {}
    for p in plan:
        for s in p.subimages:
            rows, cols = pixel_slices(s, p.depth)
            owner[rows.start, rows.step, cols.start] = p.name
    bits = dict.fromkeys(owner.values(), 0.0)
    for (_, _, rows, cols), b in steps:
        bits[owner[rows.start, rows.step, cols.start]] += b
    out = {}
    for p in plan:
        share = len(p.subimages) / (SQUEEZE**2) ** (p.depth + 1)
        out[p.name] = {"bits_per_own_subpixel": bits[p.name] / (share * subpixels), "share": bits[p.name] / subpixels}
    return out


def report(name: str, val_paths: list[Path], count: int) -> dict:
    model = zoo.load_model(name)
    gray = model.config.channels == 1
    out = {"model": name, "validation": terms(model, validation_patches(val_paths, count, gray)), "synthetic": {}}
    for label, image in synthetic(model.config.channels).items():
        planar = torch.from_numpy(image.reshape(256, 256, -1)).permute(2, 0, 1)
        grid = PatchGrid(256, 256)
        row = terms(model, grid.extract(planar, 0, len(grid)))
        row["file_bpsp"] = 8 * len(bsw.compress(image, model=name, method="bitswap")) / image.size
        out["synthetic"][label] = row
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=[zoo.DEFAULT_MODELS[3]])
    parser.add_argument("--val-dir", type=Path, help="folder of held-out photos (default: photos-large's val.txt)")
    parser.add_argument("--patches", type=int, default=2048)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    val_paths = validation_paths(args.val_dir)
    results = []
    for name in args.models:
        result = report(name, val_paths, args.patches)
        results.append(result)
        v = result["validation"]
        print(f"{name}: validation -ELBO {v['neg_elbo']:.4f} = recon {v['recon']:.4f} + KL "
              + " + ".join(f"{k:.4f}" for k in v["kl"]))
        for layer, (kl, information) in enumerate(zip(v["kl_per_channel_bits_per_patch"], v["posterior_information_bits_per_patch"]), 1):
            print(f"  z{layer}, bits per patch: KL per channel " + " ".join(f"{k:.1f}" for k in kl) + f", posterior information {information:.0f}")
        for label, row in result["synthetic"].items():
            print(f"  {label}: file {row['file_bpsp']:.4f}, -ELBO {row['neg_elbo']:.4f} = recon {row['recon']:.4f} + KL "
                  + " + ".join(f"{k:.4f}" for k in row["kl"]))
            for name, cost in row.get("recon_by_pass", {}).items():
                print(f"    {name}: {cost['bits_per_own_subpixel']:.3f} bits per own subpixel, {cost['share']:.4f} of the whole")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
