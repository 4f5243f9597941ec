"""Corruption sweep: a damaged file decodes to its exact pixels or raises a documented error.

    python benchmarks/corruption_sweep.py [--flips 10000] [--seconds-per-file S] [--seed 0]
                                          [--files NAME ...] [--json benchmarks/results/corruption-sweep.json]

Five real files from the fuzzer's seeds (``fuzz.seed_files``): L, RGB and RGBA
coded through the network (Bit-Swap and BB-ANS), LA and a stack stored
all-deflated, as ``compress`` stores images this small; ``--files`` names
other seeds (such as the default models' ``deep-*-polyphase-*``). For each,
``decompress`` runs on every truncation (every length from 0 to the file's length - 1) and
on ``--flips`` copies with one random bit flipped. Each outcome is a clean
error (a ``BitSwapError``), the exact original pixels, wrong pixels without an
error (must never happen) or a crash (any other exception); a wrong or crashing
input is saved under benchmarks/fuzz-out/corruption. A file coded through the
network takes about a second per flip, so ``--seconds-per-file`` may stop its
flips early; the report says how many ran. Exits 1 on any wrong pixels or crash.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

import bitswap_plugin as bsw
from bitswap_plugin.errors import BitSwapError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fuzz import ROOT, seed_files  # noqa: E402 - the sibling script

FILES = ("deep-l-32x64-bitswap", "deep-rgb-40x24-bbans", "deep-rgba-16x24-bitswap", "la-20x30-bitswap", "stack-2x20x16-bbans")
OUTCOMES = ("error", "exact", "wrong", "crash")
SAVED = ROOT / "benchmarks" / "fuzz-out" / "corruption"


def outcome(data: bytes, original: np.ndarray) -> str:
    """What ``decompress`` makes of ``data``: one of :data:`OUTCOMES`."""
    try:
        pixels = bsw.decompress(data)
    except BitSwapError:
        return "error"
    except Exception:  # noqa: BLE001 - any other exception is a finding
        return "crash"
    return "exact" if pixels.shape == original.shape and np.array_equal(pixels, original) else "wrong"


def damaged(data: bytes, flips: int, rng: random.Random):
    """Every truncation of ``data``, then ``flips`` copies with one random bit flipped: (kind, bytes)."""
    for length in range(len(data)):
        yield "truncation", data[:length]
    for _ in range(flips):
        bit = rng.randrange(8 * len(data))
        yield "flip", data[: bit // 8] + bytes([data[bit // 8] ^ (1 << bit % 8)]) + data[bit // 8 + 1 :]


def sweep(data: bytes, flips: int, rng: random.Random, seconds: float = float("inf")) -> dict[str, Counter]:
    """Outcome counts of every truncation and of ``flips`` bit flips of ``data`` (flips stop after
    ``seconds``); wrong or crashing inputs are saved under :data:`SAVED`."""
    original = bsw.decompress(data)
    counts = {"truncation": Counter(), "flip": Counter()}
    start = time.monotonic()
    for kind, case in damaged(data, flips, rng):
        if kind == "flip" and time.monotonic() - start > seconds:
            break
        result = outcome(case, original)
        counts[kind][result] += 1
        if result in ("wrong", "crash"):
            SAVED.mkdir(parents=True, exist_ok=True)
            (SAVED / f"{result}-{len(list(SAVED.iterdir()))}.bsw").write_bytes(case)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flips", type=int, default=10_000, help="bit flips per file")
    parser.add_argument("--seconds-per-file", type=float, default=float("inf"), help="stop a file's flips after this long")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--files", nargs="+", default=list(FILES), help="names of fuzz.seed_files to sweep")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "corruption-sweep.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    files = seed_files()
    unknown = sorted(set(args.files) - set(files))
    if unknown:
        parser.error(f"no such seed file: {', '.join(unknown)} (there are {', '.join(sorted(files))})")
    report = {}
    print(f"{'file':26} {'kind':10} {'count':>6} " + " ".join(f"{name:>6}" for name in OUTCOMES) + "  seconds")
    for name in args.files:
        start = time.monotonic()
        counts = sweep(files[name], args.flips, random.Random(f"{args.seed}-{name}"), args.seconds_per_file)
        report[name] = {"bytes": len(files[name]), "seconds": round(time.monotonic() - start, 1)}
        for kind, tally in counts.items():
            report[name][kind] = {key: tally[key] for key in OUTCOMES} | {"count": sum(tally.values())}
            cells = " ".join(f"{tally[key]:6d}" for key in OUTCOMES)
            print(f"{name:26} {kind:10} {sum(tally.values()):6d} {cells}  {report[name]['seconds']:.0f}", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"flips_asked": args.flips, "seed": args.seed, "files": report}, indent=2) + "\n")
    bad = sum(report[name][kind][key] for name in report for kind in ("truncation", "flip") for key in ("wrong", "crash"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
