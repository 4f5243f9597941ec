"""The chain's start: the seed ``compress`` chooses against a one-patch seed, on held-out photos and flat images.

    python benchmarks/bench_seed.py [--val-dir runs/data/val] [--model NAME] [--threads 1] [--json PATH]

A bits-back chain's first posterior pops need bits on the tail before any are
pushed. The deflated seed feeds them; where it holds too few bits (a flat
first patch, a small image) they read phantom words that the file carries
without getting back. ``compress`` then seeds more patches. For each image
(the validation photos of ``photos-large``'s ``val.txt``, never Kodak, plus
flat and smooth 256x256 images in L) this reports the message of the seed
``compress`` chose (head and tail of the file, no header) over the message
from a one-patch seed (:func:`bitswap_plugin.api.message_bits`), both with
the method forced, and the encode seconds of each, in the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import bitswap_plugin as bsw
from bitswap_plugin import container, zoo
from bitswap_plugin.bench.measure import run_metadata
from model_report import synthetic, validation_paths

ROOT = Path(__file__).resolve().parents[1]


def photos(val_dir: Path | None) -> dict[str, np.ndarray]:
    """The held-out photos, RGB."""
    return {p.name: np.asarray(Image.open(p).convert("RGB")) for p in validation_paths(val_dir)}


def measure(array: np.ndarray, model: str | None) -> dict | None:
    """The two messages of ``array``, or None where ``compress`` codes other planes than
    ``message_bits`` (a grey photo stored as RGB is coded as one grey plane)."""
    start = time.perf_counter()
    data = bsw.compress(array, model=model, method="bitswap", device="cpu")
    chosen_s = time.perf_counter() - start
    header, head, tail = container.unpack(data)
    if header.coded_mode.name != header.mode:
        return None
    start = time.perf_counter()
    one_patch = bsw.api.message_bits(array, model=model)
    one_patch_s = time.perf_counter() - start
    chosen = 8 * (len(head) + len(tail))
    return {"seed_patches": header.plan.seed_patches, "bits": chosen, "one_patch_bits": one_patch, "bpsp": chosen / array.size,
            "one_patch_bpsp": one_patch / array.size, "ratio": chosen / one_patch, "seconds": chosen_s, "one_patch_seconds": one_patch_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--val-dir", type=Path, help="folder of held-out photos (default: photos-large's val.txt)")
    parser.add_argument("--model", help="model (default: the RGB default)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "seed.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results: dict[str, dict] = {"photos": {}, "smooth": {}}
    for kind, source, model in (("photos", photos(args.val_dir), args.model), ("smooth", synthetic(1), None)):
        for name, array in source.items():
            r = measure(array, model)
            if r is None:
                print(f"{name}: skipped (compress codes fewer planes)")
                continue
            results[kind][name] = r
            print(f"{name}: seed {r['seed_patches']}, {r['bpsp']:.4f} against {r['one_patch_bpsp']:.4f} ({r['ratio']:.4f}), "
                  f"{r['seconds']:.2f} s against {r['one_patch_seconds']:.2f} s", flush=True)
    rows = list(results["photos"].values())
    summary = {
        "photos": len(rows),
        "photos_reseeded": sum(r["seed_patches"] > 1 for r in rows),
        "photo_bits_ratio": sum(r["bits"] for r in rows) / sum(r["one_patch_bits"] for r in rows),
        "photo_ratio_best": min(r["ratio"] for r in rows),
        "photo_seconds_ratio_median": statistics.median(r["seconds"] / r["one_patch_seconds"] for r in rows),
        "photo_seconds_ratio_max": max(r["seconds"] / r["one_patch_seconds"] for r in rows),
    }
    print(json.dumps(summary, indent=1))
    args.json.write_text(json.dumps({**run_metadata(), "model": args.model or zoo.DEFAULT_MODELS[3], "summary": summary, **results},
                                    indent=1) + "\n")


if __name__ == "__main__":
    main()
