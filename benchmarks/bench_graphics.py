"""Graphics and screenshots: ``.bsw`` against PNG, WebP and JPEG-XL where photo models are weakest.

    python benchmarks/bench_graphics.py [--json PATH]

For each image of :data:`bitswap_plugin.bench.graphics.GRAPHICS` (text, user
interface, palette, charts, mask, labels, scan, pixel art, flat, gradient,
logo) it reports bytes for: the file as ``compress`` writes it (``method="auto"``,
with the method it chose), the learned coder forced (``method="bitswap"``), the
raw pixels, PNG (optimize), WebP lossless (method 6) and JPEG-XL e7, all
measured in the same run and all checked to round-trip. ``auto / best`` is the
file's size over the better of PNG and WebP (target: at most 1.10). Results go
to benchmarks/results/graphics.json and a Markdown table to stdout.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import bitswap_plugin as bsw
from bitswap_plugin.bench.codecs import classical_codecs, select
from bitswap_plugin.bench.graphics import GRAPHICS
from bitswap_plugin.bench.measure import measure, run_metadata

ROOT = Path(__file__).resolve().parents[1]
BASELINES = ["png", "webp", "jpegxl-e7"]


def _coded(array: np.ndarray, method: str) -> tuple[int, str, float]:
    """(bytes, the method stored, encode seconds) of ``compress(array, method=method)``, round-trip checked."""
    start = time.perf_counter()
    data = bsw.compress(array, method=method)
    seconds = time.perf_counter() - start
    assert np.array_equal(bsw.decompress(data), array), f"{method} did not round-trip"
    return len(data), bsw.read_info(data).method, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "graphics.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = []
    baselines = list(select(classical_codecs(), BASELINES))
    for name, draw in GRAPHICS.items():
        array = draw()
        row = {"image": name, "shape": list(array.shape), "raw": array.nbytes}
        row["auto"], row["auto_method"], row["auto_encode_s"] = _coded(array, "auto")
        row["bitswap"], _, row["bitswap_encode_s"] = _coded(array, "bitswap")
        for codec in baselines:
            if codec.codes(array):
                row[codec.name] = measure(codec, name, array).bytes
        row["auto_over_best"] = row["auto"] / min(row[name] for name in ("png", "webp") if name in row)
        rows.append(row)
        print(json.dumps(row), flush=True)

    columns = ["auto", "bitswap", *(c.name for c in baselines)]
    print(f"\n| image | size | .bsw (auto) | chosen | Bit-Swap forced | {' | '.join(columns[2:])} | auto / best of PNG, WebP |")
    print("|---|---|---:|---|---:|" + "---:|" * (len(columns) - 2) + "---:|")
    for row in rows:
        cells = " | ".join(f"{row[c]:,}" if c in row else "–" for c in columns[2:])
        size = "×".join(map(str, row["shape"]))
        print(f"| {row['image']} | {size} | {row['auto']:,} | {row['auto_method']} | {row['bitswap']:,} | {cells} | {row['auto_over_best']:.3f} |")
    worst = max(rows, key=lambda r: r["auto_over_best"])
    print(f"\nworst auto / best: {worst['auto_over_best']:.3f} ({worst['image']}); "
          + ", ".join(f"total {name} {sum(r.get(name, 0) for r in rows):,} B" for name in ("auto", "png", "webp")))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"meta": run_metadata(), "images": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
