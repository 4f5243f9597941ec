"""Restore a .bsw file, verify it, and write it as PNG.

    python entry_points/demo_decompress.py [FILE.bsw] [-o OUT.png] [--reference IMAGE]

Without FILE, restores ``out/astronaut.bsw`` as written by demo_compress.py and
checks it against the bundled sample. The PNG goes to ``out/`` (created) unless
``-o`` names another path.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image

import bitswap_plugin as bsw
from bitswap_plugin.images import from_array, to_array

from demo_compress import OUT, SAMPLE, output_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", nargs="?", default=str(OUT / "astronaut.bsw"), help=".bsw file (default: out/astronaut.bsw)")
    parser.add_argument("-o", "--output", help="PNG to write (default: out/FILE-NAME.png)")
    parser.add_argument("--reference", help="original image to compare with (default: the bundled sample for astronaut.bsw)")
    args = parser.parse_args()

    data = Path(args.file).read_bytes()
    start = time.perf_counter()
    array = bsw.decompress(data)  # verifies the stored pixel checksum
    seconds = time.perf_counter() - start
    output = output_path(args.output, args.file, ".png")
    from_array(array).save(output)
    print(f"{args.file}: {bsw.read_info(data).bits_per_subpixel:.3f} bits/subpixel, decoded in {seconds:.2f} s, checksum OK; wrote {output}")

    reference = args.reference or (str(SAMPLE) if Path(args.file).name == "astronaut.bsw" else None)
    if reference:
        with Image.open(reference) as image:
            identical = np.array_equal(to_array(image), array)
        print(f"identical to {reference}: {identical}")
        if not identical:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
