"""Compress an image with Bit-Swap and compare it with classical lossless codecs.

    python entry_points/demo_compress.py [IMAGE] [-o OUT.bsw]

Without IMAGE, compresses the bundled sample photo. Any format Pillow reads
works (PNG, JPEG, ...): the image is first decoded to pixels, and those pixels
are what every codec below stores losslessly. Nothing is cropped. The .bsw file,
coded by the learned coder (``--method``), goes to ``out/`` in the current folder
(created) unless ``-o`` names another path; the table also shows what
``compress`` writes by default (``method="auto"``, never worse than WebP or raw).
"""

from __future__ import annotations

import argparse
import time
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

import bitswap_plugin as bsw
from bitswap_plugin.bench.codecs import classical_codecs, select
from bitswap_plugin.images import to_array

SAMPLE = resources.files("bitswap_plugin") / "samples" / "astronaut.png"
OUT = Path("out")
"""Where the demos write by default, in the current folder."""


def output_path(output: str | None, source: str, suffix: str) -> Path:
    """``output``, or ``out/`` + ``source``'s file name with ``suffix``; its folder is created."""
    path = Path(output) if output else OUT / Path(source).with_suffix(suffix).name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


DEMO_CODECS = ["gzip", "bzip2", "lzma", "png", "webp"]


def classical_sizes(array: np.ndarray) -> dict[str, int]:
    """Bytes each classical codec needs for the same pixels."""
    return {codec.description: len(codec.encode(array)) for codec in select(classical_codecs(), DEMO_CODECS)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", nargs="?", default=str(SAMPLE), help="image to compress (default: bundled sample)")
    parser.add_argument("-o", "--output", help="where to write the .bsw file (default: out/IMAGE-NAME.bsw)")
    parser.add_argument("--method", default="bitswap", choices=["bitswap", "bbans"])
    args = parser.parse_args()

    with Image.open(args.image) as image:
        array = to_array(image)
    start = time.perf_counter()
    data = bsw.compress(array, method=args.method)
    seconds = time.perf_counter() - start
    output = output_path(args.output, args.image, ".bsw")
    output.write_bytes(data)

    subpixels = array.size
    auto = bsw.compress(array)  # what compress writes by default: the smallest of Bit-Swap, WebP and raw
    rows = {f"Bit-Swap ({args.method})": len(data), f".bsw default (auto: {bsw.read_info(auto).method})": len(auto), **classical_sizes(array)}
    print(f"{args.image}: {array.shape[1]}x{array.shape[0]}, {subpixels} subpixels, raw {subpixels} bytes")
    width = max(map(len, rows)) + 2
    print(f"{'codec':<{width}}{'bytes':>10}{'ratio':>8}{'bits/subpixel':>15}")
    for name, size in rows.items():
        print(f"{name:<{width}}{size:>10}{subpixels / size:>8.2f}{8 * size / subpixels:>15.3f}")
    print(f"Bit-Swap took {seconds:.2f} s; wrote {output}")


if __name__ == "__main__":
    main()
