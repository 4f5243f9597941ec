"""Bit-Swap on a folder of images: bits per subpixel, -ELBO, and seconds each way.

    python benchmarks/bench_kodak.py [--images DIR] [--limit N] [--method bitswap] [--gray]

Reports the learned coder's file bits per subpixel (``--method`` forced), the
integer model's -ELBO on the same patches (what the coder should reach), encode
and decode seconds per image, the file ``compress`` writes by default
(``method="auto"``: size, the method it chose, encode seconds), and the
same-run baselines PNG, WebP lossless and, when imagecodecs is installed,
JPEG-XL lossless effort 7. Results go to
benchmarks/results/kodak-<method>[-gray].json.
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
from bitswap_plugin import api, container, zoo
from bitswap_plugin.bench.codecs import classical_codecs, select
from bitswap_plugin.bench.measure import measure, run_metadata

ROOT = Path(__file__).resolve().parents[1]
LANE_OVERHEAD_BITS = 6
"""Bits a lane costs beyond the information it holds: its head's 5-bit length
prefix, plus under 1 bit for starting it from a tail word (see ans.py)."""


def _timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


BASELINES = ["png", "webp", "jpegxl-e7"]
"""The classical codecs measured beside Bit-Swap (from the bench's codec registry)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=ROOT.parent / "shared" / "datasets" / "kodak")
    parser.add_argument("--limit", type=int, default=None, help="only the first N images")
    parser.add_argument("--method", default="bitswap", choices=["bitswap", "bbans"])
    parser.add_argument("--model", default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--gray", action="store_true", help="code the images converted to greyscale (the grey model)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    paths = sorted(args.images.glob("*.png"))[: args.limit]
    model = zoo.load_model(args.model or zoo.DEFAULT_MODELS[1 if args.gray else 3])
    rows = []
    for path in paths:
        array = np.asarray(Image.open(path).convert("L" if args.gray else "RGB"))
        data, encode_s = _timed(bsw.compress, array, model=args.model, method=args.method)
        decoded, decode_s = _timed(bsw.decompress, data)
        assert np.array_equal(decoded, array), f"{path.name} did not round-trip"
        elbo = api.neg_elbo_bits(array, model=args.model) / array.size
        header = container.unpack(data)[0]
        row = {"image": path.name, "subpixels": array.size, "bytes": len(data), "bpsp": 8 * len(data) / array.size,
               "neg_elbo_bpsp": elbo, "encode_s": encode_s, "decode_s": decode_s, "lanes": header.num_lanes,
               "lane_overhead_fraction": LANE_OVERHEAD_BITS * header.num_lanes / (8 * len(data)), "seed_fraction": header.plan.seed_length / len(data),
               "groups": len(header.plan.group_sizes)}
        auto, row["auto_encode_s"] = _timed(bsw.compress, array, model=args.model)
        row["auto_bpsp"], row["auto_method"] = 8 * len(auto) / array.size, bsw.read_info(auto).method
        for codec in select(classical_codecs(), BASELINES):
            result = measure(codec, path.name, array)
            row[f"{codec.name}_bpsp"] = 8 * result.bytes / array.size
            row[f"{codec.name}_encode_s"] = result.encode_s
        rows.append(row)
        print(f"{path.name}: {row['bpsp']:.3f} bpsp (-ELBO {elbo:.3f}, PNG {row['png_bpsp']:.3f}, WebP {row['webp_bpsp']:.3f}"
              + (f", JPEG-XL {row['jpegxl-e7_bpsp']:.3f}" if "jpegxl-e7_bpsp" in row else "")
              + f"; auto {row['auto_bpsp']:.3f} by {row['auto_method']} in {row['auto_encode_s']:.2f} s"
              + f"), encode {encode_s:.2f} s, decode {decode_s:.2f} s, {header.num_lanes} lanes "
              + f"(lane state overhead <= {100 * row['lane_overhead_fraction']:.2f} % of the file), {row['groups']} groups", flush=True)

    total = sum(r["subpixels"] for r in rows)
    summary = {"images": len(rows), "method": args.method, "model": model.config.name,
               "bpsp": sum(8 * r["bytes"] for r in rows) / total,
               "neg_elbo_bpsp": sum(r["neg_elbo_bpsp"] * r["subpixels"] for r in rows) / total,
               "median_encode_s": statistics.median(r["encode_s"] for r in rows),
               "median_decode_s": statistics.median(r["decode_s"] for r in rows),
               "max_lane_overhead_fraction": max(r["lane_overhead_fraction"] for r in rows),
               "mean_seed_fraction": statistics.mean(r["seed_fraction"] for r in rows)}
    for key in [k for k in rows[0] if k.endswith("_bpsp") and k not in ("bpsp", "neg_elbo_bpsp")]:
        summary[key] = sum(r[key] * r["subpixels"] for r in rows) / total
    for key in [k for k in rows[0] if k.endswith("_encode_s") and k != "encode_s"]:
        summary[f"median_{key}"] = statistics.median(r[key] for r in rows)
    meta = run_metadata()
    print(json.dumps(summary, indent=2))
    target = args.json or ROOT / "benchmarks" / "results" / f"kodak-{args.method}{'-gray' if args.gray else ''}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps({"meta": meta, "summary": summary, "images": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
