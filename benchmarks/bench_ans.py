"""Throughput of the vectorized rANS coder, in symbols per second.

    python benchmarks/bench_ans.py [--lanes 4096 65536] [--symbols N] [--repeat R]
                                   [--bins 256 1024] [--device cpu [cuda]] [--threads T]

Measures, for each lane count: ``AnsCoder.push`` of precomputed (start, freq)
intervals, and ``AnsCoder.pop`` of a ``DiscretizedLogistic`` family (which runs
its bit-by-bit ``search`` and ``ranges`` every step) for each bin count; and,
independently of lanes, the bare cost of ``DiscretizedLogistic.ranges`` over
all symbols. Each time is the best of ``--repeat`` runs after one warm-up.
It runs on the CPU, and on CUDA too when available, unless ``--device`` says.

Baselines, measured in the same run over the same element count: one int64
elementwise torch add ``a + b`` on the benchmark device, and numpy's
``np.add.reduce`` of an int64 array (CPU). The ``x add`` / ``x reduce``
columns are an operation's time divided by the baseline's, i.e. how many such
passes over the data the operation costs. Results go to
benchmarks/results/ans.json unless ``--json`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from bitswap_plugin.ans import AnsCoder
from bitswap_plugin.distributions import DiscretizedLogistic
from bitswap_plugin.fixedpoint import LOG_SCALE_MAX, LOG_SCALE_MIN, MEAN_FRAC, PRECISION

ROOT = Path(__file__).resolve().parents[1]


def best_time(fn: Callable[[], object], repeat: int, device: torch.device, setup: Callable[[], object] | None = None) -> float:
    """Best wall time of ``fn`` over ``repeat`` runs after a warm-up; ``setup`` runs untimed before each."""
    times = []
    for _ in range(repeat + 1):
        if setup is not None:
            setup()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times[1:])


def random_model(gen: torch.Generator, count: int, num_bins: int, device: torch.device) -> DiscretizedLogistic:
    """Parameters uniform over the clamp ranges: means in [-1, num_bins] bins, log-scales in [MIN, MAX]."""
    mean = torch.randint(-(1 << MEAN_FRAC), (num_bins << MEAN_FRAC) + 1, (count,), generator=gen)
    log_scale = torch.randint(LOG_SCALE_MIN, LOG_SCALE_MAX + 1, (count,), generator=gen)
    return DiscretizedLogistic(mean.to(device), log_scale.to(device), num_bins)


def fresh_coder(lanes: int, device: torch.device) -> AnsCoder:
    """A coder with ``lanes`` lanes grown from a tail of random words."""
    words = torch.randint(0, 1 << 32, (lanes,), generator=torch.Generator().manual_seed(lanes))
    coder = AnsCoder.from_bytes(0, b"", words.numpy().astype("<u4").tobytes(), device=device)
    coder.grow(lanes)
    return coder


def run(args: argparse.Namespace, device: torch.device) -> dict:
    """All measurements on one device."""
    count, repeat = args.symbols, args.repeat
    gen = torch.Generator().manual_seed(0)

    a = torch.randint(0, 1 << 30, (count,), generator=gen).to(device)
    b = torch.randint(0, 1 << 30, (count,), generator=gen).to(device)
    host = a.cpu().numpy()
    baseline = {
        "torch_add_s": best_time(lambda: a + b, repeat, device),
        "np_add_reduce_s": best_time(lambda: np.add.reduce(host), repeat, torch.device("cpu")),
    }

    models = {bins: random_model(gen, count, bins, device) for bins in args.bins}
    symbols = {bins: model.search(torch.randint(0, 1 << PRECISION, (count,), generator=gen).to(device)) for bins, model in models.items()}
    intervals = {bins: models[bins].ranges(symbols[bins]) for bins in args.bins}

    rows = []

    def record(operation: str, lanes: int | None, bins: int | None, seconds: float) -> None:
        rows.append(
            {
                "operation": operation,
                "lanes": lanes,
                "bins": bins,
                "symbols": count,
                "seconds": seconds,
                "symbols_per_s": count / seconds,
                "x_torch_add": seconds / baseline["torch_add_s"],
                "x_np_add_reduce": seconds / baseline["np_add_reduce_s"],
            }
        )

    for bins in args.bins:
        record("ranges", None, bins, best_time(lambda: models[bins].ranges(symbols[bins]), repeat, device))

    for lanes in args.lanes:
        holder: dict[str, AnsCoder] = {}

        def new_coder() -> None:
            holder["coder"] = fresh_coder(lanes, device)

        first = args.bins[0]
        record("push", lanes, first, best_time(lambda: holder["coder"].push(*intervals[first]), repeat, device, new_coder))
        for bins in args.bins:

            def pushed() -> None:
                new_coder()
                holder["coder"].push(*intervals[bins])

            pushed()
            if not torch.equal(holder["coder"].pop(models[bins]), symbols[bins]):
                raise RuntimeError(f"pop did not return the pushed symbols ({lanes} lanes, {bins} bins)")
            record("pop+search", lanes, bins, best_time(lambda: holder["coder"].pop(models[bins]), repeat, device, pushed))

    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "symbols": count,
        "repeat": repeat,
        "baseline": {
            "description": "best time of one int64 torch add (a + b) on the device, and of np.add.reduce of int64 on CPU, over the same element count",
            **baseline,
        },
        "results": rows,
    }


def print_table(report: dict) -> None:
    base = report["baseline"]
    print(f"device {report['device']} ({report['device_name']}), torch {report['torch']}, {report['threads']} threads, {report['symbols']} symbols, best of {report['repeat']}")
    print(f"baseline: torch int64 a + b {base['torch_add_s'] * 1e3:.3f} ms, np.add.reduce int64 {base['np_add_reduce_s'] * 1e3:.3f} ms")
    header = f"{'operation':<11} {'lanes':>6} {'bins':>5} {'ms':>10} {'Msym/s':>9} {'x add':>8} {'x reduce':>9}"
    print(header)
    print("-" * len(header))
    for row in report["results"]:
        lanes = "-" if row["lanes"] is None else str(row["lanes"])
        print(
            f"{row['operation']:<11} {lanes:>6} {row['bins']:>5} {row['seconds'] * 1e3:>10.2f} "
            f"{row['symbols_per_s'] / 1e6:>9.3f} {row['x_torch_add']:>8.1f} {row['x_np_add_reduce']:>9.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lanes", type=int, nargs="+", default=[4096, 65536], help="lane counts (default: 4096 65536)")
    parser.add_argument("--symbols", type=int, default=1 << 20, help="symbols per operation (default: 2**20)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per measurement; the best counts (default: 3)")
    parser.add_argument("--bins", type=int, nargs="+", default=[256, 1024], help="DiscretizedLogistic bin counts (default: 256 1024)")
    default_devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    parser.add_argument("--device", nargs="+", default=default_devices, help="torch devices (default: cpu, and cuda if available)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "ans.json", help="where to write results")
    args = parser.parse_args()
    if any(name.startswith("cuda") for name in args.device) and not torch.cuda.is_available():
        parser.error("CUDA is not available")
    if args.threads:
        torch.set_num_threads(args.threads)
    reports = []
    for name in args.device:
        reports.append(run(args, torch.device(name)))
        print_table(reports[-1])
        print()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"runs": reports}, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
