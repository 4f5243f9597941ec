"""Pack a training set that a lent GPU machine can carry, and print the run that uses it.

The device tool carries at most 64 MiB of ignored files, and its machine cannot
see ``../shared``. This copies the held-out photos of ``photos-large/val.txt``
into ``OUT/val`` and a seeded random choice of the other photos, whole files
(already lossless WebP), into ``OUT/train`` until ``--budget-mib`` is spent.
``OUT/manifest.json`` lists what went where, for the model card::

    python benchmarks/pack_training_data.py --out .data
    # then one device call carrying .data (see models/README.md)

Kodak is never packed.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
from pathlib import Path

LARGE = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "photos-large"


def choose(root: Path, budget: int, seed: int) -> tuple[list[Path], list[Path]]:
    """(training files, validation files): every validation file, then training files in a seeded
    random order while their sizes fit in ``budget`` bytes beside the validation ones."""
    held_out = [root / line.strip() for line in (root / "val.txt").read_text().splitlines() if line.strip()]
    names = set(held_out)
    candidates = sorted(p for p in root.glob("*/*.webp") if p not in names)
    random.Random(seed).shuffle(candidates)
    left = budget - sum(p.stat().st_size for p in held_out)
    if left <= 0:
        raise SystemExit("the budget does not even hold the validation photos")
    train = []
    for path in candidates:
        size = path.stat().st_size
        if size <= left:
            train.append(path)
            left -= size
    return train, held_out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(".data"))
    parser.add_argument("--data", type=Path, default=LARGE, help="photos-large (with val.txt)")
    parser.add_argument("--budget-mib", type=float, default=56.0, help="bytes to fill, leaving room under the 64 MiB carry limit")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    train, val = choose(args.data, int(args.budget_mib * 2**20), args.seed)
    for folder, files in (("train", train), ("val", val)):
        target = args.out / folder
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        for path in files:  # <dataset>-<file>: names stay unique across datasets
            shutil.copyfile(path, target / f"{path.parent.name}-{path.name}")
    manifest = {folder: [f"{p.parent.name}/{p.name}" for p in files] for folder, files in (("train", train), ("val", val))}
    (args.out / "manifest.json").write_text(json.dumps({"seed": args.seed, **manifest}, indent=1) + "\n")
    total = sum(p.stat().st_size for p in train + val) / 2**20
    print(f"{len(train)} training and {len(val)} validation photos, {total:.1f} MiB, in {args.out}")


if __name__ == "__main__":
    main()
