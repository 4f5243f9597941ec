"""Does a larger patch pay? The -ELBO of crops taken whole against the same crops cut into 32x32 patches.

    python benchmarks/patch_context.py --models polyphase-rgb-l2 polyphase-gray-l2 [--sizes 64 128] [--json OUT]

The coder cuts images into independent 32x32 patches, so pixels at a patch's
edge lose the context across it. The networks are fully convolutional, so
the model's training form (``models/<name>.float.safetensors``, in its
quantized mode: the integer model's arithmetic, emulated) can also run on a
whole 64x64 or 128x128 crop; the difference between that -ELBO and the same
crop's as 32x32 tiles bounds what larger patches (or conditioning a patch on
its decoded neighbours) could save with this model. Crops are fixed random
crops of the held-out photos (``photos-large``'s ``val.txt``; never Kodak),
one posterior sample each with the same seed. Bits per subpixel.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from model_report import validation_paths, validation_patches

from bitswap_plugin.fileformat import PATCH
from bitswap_plugin.model import load_float_model, neg_elbo

ROOT = Path(__file__).resolve().parents[1]
PIXELS_PER_BATCH = 64 * PATCH * PATCH


def tiles(crops: torch.Tensor) -> torch.Tensor:
    """(n, C, S, S) crops as (n * (S/32)**2, C, 32, 32) patches."""
    n, c = crops.shape[:2]
    grid = crops.unfold(2, PATCH, PATCH).unfold(3, PATCH, PATCH)
    return grid.permute(0, 2, 3, 1, 4, 5).reshape(-1, c, PATCH, PATCH)


def measure(name: str, val_paths: list[Path], size: int, count: int) -> dict:
    model = load_float_model(ROOT / "models" / f"{name}.float.safetensors")
    crops = validation_patches(val_paths, count, model.config.channels == 1, size)
    whole = neg_elbo(model, crops, max(1, PIXELS_PER_BATCH // size**2), torch.Generator().manual_seed(0))
    tiled = neg_elbo(model, tiles(crops), 64, torch.Generator().manual_seed(0))
    return {"model": name, "quantized": model.quantized, "size": size, "crops": count, "whole": whole, "tiled": tiled,
            "gain": tiled - whole, "gain_percent": 100 * (tiled - whole) / tiled}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["polyphase-rgb-l2"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[64, 128])
    parser.add_argument("--pixels", type=int, default=1 << 20, help="crop pixels per size (default 2**20)")
    parser.add_argument("--val-dir", type=Path, help="folder of held-out photos (default: photos-large's val.txt)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if any(size % PATCH or size <= PATCH for size in args.sizes):
        parser.error(f"--sizes must be multiples of {PATCH} above {PATCH}")
    torch.set_num_threads(args.threads)
    val_paths = validation_paths(args.val_dir)
    results = []
    for name in args.models:
        for size in args.sizes:
            row = measure(name, val_paths, size, max(1, args.pixels // size**2))
            results.append(row)
            print(f"{name} {size}x{size} ({row['crops']} crops): whole {row['whole']:.4f}, as 32x32 patches "
                  f"{row['tiled']:.4f}: {row['gain']:+.4f} ({row['gain_percent']:.2f} %)", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
