"""GPU check: round trips on CUDA, bit-exactness against CPU-written files, throughput.

Run in two places:

1. on any machine, write the reference files with the CPU coder::

       python benchmarks/gpu_check.py --make-cpu-files DIR --images IMG [IMG ...]

   (``DIR`` gets ``<stem>.bsw`` per image, ``<stem>-gray.bsw`` for its grey
   version, and ``tiled.bsw`` for a ``--tiled-side`` squared image tiled from
   the inputs, 0 for none);

2. on the GPU machine, with ``DIR`` carried along::

       python benchmarks/gpu_check.py --cpu-files DIR --images IMG [IMG ...] --device cuda --out check.json

   For every image it decodes the CPU-written file on the GPU, encodes on the
   GPU and compares the bytes with the CPU file, decodes the GPU-written file
   on that machine's CPU, and times compress and decompress on the GPU (raw
   megabytes per second). Each check is reported, never skipped silently; the
   exit status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bitswap_plugin import compress, decompress  # noqa: E402
from bitswap_plugin.api import resolve_device  # noqa: E402
from bitswap_plugin.bench.experiments import mosaic  # noqa: E402

TILED_SIDE = 2048


def load_cases(paths: list[str], tiled_side: int = TILED_SIDE) -> dict[str, np.ndarray]:
    """Each image (RGB), its grey version, and a ``tiled_side`` squared RGB mosaic of them all (0: none)."""
    cases = {}
    for path in paths:
        with Image.open(path) as im:
            cases[Path(path).stem] = np.asarray(im.convert("RGB"))
            cases[Path(path).stem + "-gray"] = np.asarray(im.convert("L"))
    if tiled_side:
        cases["tiled"] = mosaic([Path(path) for path in paths], tiled_side)
    return cases


def _timed(fn, device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - start


def check(cases: dict[str, np.ndarray], cpu_files: Path, device: torch.device, report) -> list[dict]:
    """Run every check; ``report(results)`` is called after each image, so a timeout keeps what was done."""
    results = []
    compress(cases[next(iter(cases))][:64, :64], method="bitswap", device=device)  # load models, warm up kernels
    for name, image in cases.items():
        row: dict = {"image": name, "shape": list(image.shape), "raw_mb": image.nbytes / 1e6}
        try:
            reference = (cpu_files / f"{name}.bsw").read_bytes()
            decoded, seconds = _timed(lambda: decompress(reference, device=device), device)
            row["cpu_file_decodes_on_device"] = bool(np.array_equal(decoded, image))
            row["decompress_s"] = seconds
            data, seconds = _timed(lambda: compress(image, method="bitswap", device=device), device)
            row["compress_s"] = seconds
            row["device_file_equals_cpu_file"] = data == reference
            # identical bytes decode as the CPU file does (CI round-trips CPU files); else decode here
            row["device_file_decodes_on_cpu"] = data == reference or bool(np.array_equal(decompress(data, device="cpu"), image))
            row["compress_mb_s"] = row["raw_mb"] / row["compress_s"]
            row["decompress_mb_s"] = row["raw_mb"] / row["decompress_s"]
            row["bits_per_subpixel"] = 8 * len(data) / image.size
        except Exception:  # report every failure, keep checking the rest
            row["error"] = traceback.format_exc(limit=8)
        print(json.dumps(row), flush=True)
        results.append(row)
        report(results)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", nargs="+", required=True)
    parser.add_argument("--make-cpu-files", type=Path, help="write the CPU reference files here and stop")
    parser.add_argument("--cpu-files", type=Path, help="folder of CPU reference files")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiled-side", type=int, default=TILED_SIDE, help="side of the tiled image, 0 for none")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if not (args.make_cpu_files or args.cpu_files):
        parser.error("give --make-cpu-files DIR (write the references) or --cpu-files DIR (check against them)")
    cases = load_cases(args.images, args.tiled_side)
    if args.make_cpu_files:
        args.make_cpu_files.mkdir(parents=True, exist_ok=True)
        for name, image in cases.items():
            (args.make_cpu_files / f"{name}.bsw").write_bytes(compress(image, method="bitswap", device="cpu"))
        return 0
    device = resolve_device(args.device)
    results = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "torch": torch.__version__}

    def report(checks: list[dict]) -> None:
        results["checks"] = checks
        if args.out:
            args.out.write_text(json.dumps(results, indent=2) + "\n")

    check(cases, args.cpu_files, device, report)
    keys = ("cpu_file_decodes_on_device", "device_file_equals_cpu_file", "device_file_decodes_on_cpu")
    ok = all(row.get(k) is True for row in results["checks"] for k in keys)
    print("ALL CHECKS PASSED" if ok else "SOME CHECKS FAILED", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
