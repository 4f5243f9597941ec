"""Speed and scale (issue #6): coding time against JPEG-XL, network passes against patches, peak memory.

    python benchmarks/bench_speed.py [--only timing passes rss] [--model NAME [NAME ...]] [--threads 2]
                                     [--image kodim05.png] [--gray] [--runs 3] [--sizes 32 64 ... 1024]
                                     [--rss-sizes 4096]

* ``timing``: compress and decompress one Kodak image (default kodim05,
  768x512; with ``--gray`` converted to L) with each of ``--model`` (default:
  the shipped default), best and median of ``--runs``, beside JPEG-XL
  lossless effort 7 (imagecodecs, its default threads) encoding and decoding
  the same pixels in the same run; the ratios are Bit-Swap seconds over
  JPEG-XL seconds, and over the first model's.
* ``passes``: sequential network passes, counted by wrapping the model's
  ``posterior_codes``, ``prior_codes`` and (polyphase) ``pass_codes``
  (consecutive calls of one network at one level are the batches of one pass),
  and the header's group count, against the number of patches, for square
  images of ``--sizes``.
* ``rss``: peak resident memory (``VmHWM``) of a fresh process compressing,
  and of another decompressing, ``--rss-sizes`` squared RGB images.
* ``split``: where a decode of the timing image spends its time, per model:
  each level codec of the chain (the posterior pushes, the priors' pops; the
  pixels' likelihood is the prior at level 0), and inside them the networks
  and the ANS coder, with the symbols each coded (median of ``--runs``).
* ``busy``: the ``bitswap`` command compressing (``--method bitswap``) and
  decompressing the timing image as a user runs it, on the machine as it is and
  with ``--busy`` extra processes spinning on the CPU, with the command's
  default (idle threads sleep: ``OMP_WAIT_POLICY=PASSIVE``), the same on one
  thread (``OMP_NUM_THREADS=1``) and with ``OMP_WAIT_POLICY=ACTIVE`` (OpenMP's
  spinning default before); every run must write the same bytes.

Test images are real photos: mosaics of the Kodak images (benchmark-only data). Each section is stored under its own key in
benchmarks/results/speed.json (``--json``), so sections can run separately.
Run it on a committed tree: the results name the commit and list uncommitted
package files.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import bitswap_plugin as bsw
from bitswap_plugin import container, zoo
from bitswap_plugin.bench.codecs import bitswap_codecs, classical_codecs, select
from bitswap_plugin.bench.experiments import mosaic
from bitswap_plugin.bench.measure import Measurement, measure, run_metadata
from bitswap_plugin.patches import PatchGrid

ROOT = Path(__file__).resolve().parents[1]
KODAK = ROOT.parent / "shared" / "datasets" / "kodak"
RSS_TARGET_BYTES = 1.5e9


def _timed(fn: Callable, *args, **kwargs) -> tuple[object, float]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def _summary(seconds: list[float]) -> dict[str, float | list[float]]:
    return {"best_s": min(seconds), "median_s": statistics.median(seconds), "runs_s": seconds}


def timing(image: np.ndarray, models: list[str], runs: int) -> dict:
    """Bit-Swap with each of ``models`` and JPEG-XL e7 (``bitswap bench``'s codecs, every output
    decoded and checked) each way on the same pixels, run after run in turn so that changes in
    the load hit all alike.

    Besides wall seconds each way, the process CPU seconds of each round trip (all
    threads): on a shared machine they depend far less on what else runs. Ratios are
    against JPEG-XL and against the first model."""
    codecs = dict(zip(models, bitswap_codecs(models, ("bitswap",))))
    codecs["jpegxl"] = next(select(classical_codecs(), ["jpegxl-e7"]))
    measured: dict[str, list[Measurement]] = {name: [] for name in codecs}
    cpu: dict[str, list[float]] = {name: [] for name in codecs}
    for _ in range(runs):
        for name, codec in codecs.items():
            start = time.process_time()
            measured[name].append(measure(codec, name, image))
            cpu[name].append(time.process_time() - start)
    out: dict[str, dict] = {}
    for name, rows in measured.items():
        out[name] = {"bpsp": 8 * rows[0].bytes / image.size, "round_trip_cpu": _summary(cpu[name])}
        for way in ("encode", "decode"):
            out[name][way] = _summary([getattr(row, f"{way}_s") for row in rows])
    for name in models:
        for baseline in ("jpegxl", models[0]):
            out[name][f"ratio_to_{baseline}"] = {
                f"{way}_{stat}": out[name][way][f"{stat}_s"] / out[baseline][way][f"{stat}_s"]
                for way in ("encode", "decode", "round_trip_cpu") for stat in ("best", "median")
            }
    return out


@contextmanager
def counting_passes(name: str) -> Iterator[dict[str, int]]:
    """Count the network calls and sequential passes of model ``name`` (as the API loads it) while inside."""
    model = zoo.load_model(name)
    counts = {"calls": 0, "passes": 0}
    last: list[tuple[str, int] | None] = [None]

    def wrap(network: str, fn: Callable) -> Callable:
        def counted(level: int, inp: torch.Tensor):
            counts["calls"] += 1
            if last[0] != (network, level):
                counts["passes"] += 1
            last[0] = (network, level)
            return fn(level, inp)

        return counted

    networks = [name for name in ("posterior_codes", "prior_codes", "pass_codes") if hasattr(model, name)]
    for network in networks:
        setattr(model, network, wrap(network, getattr(model, network)))
    try:
        yield counts
    finally:
        for network in networks:
            delattr(model, network)


def passes(photos: list[Path], sizes: list[int], model: str | None) -> Iterator[dict]:
    """Network passes and groups per image size; encoding and decoding run the same groups in reverse."""
    name = model or zoo.DEFAULT_MODELS[3]
    for side in sizes:
        image = mosaic(photos, side)
        with counting_passes(name) as encode:
            data, encode_s = _timed(bsw.compress, image, model=model)
        with counting_passes(name) as decode:
            assert np.array_equal(bsw.decompress(data), image)
        patches = len(PatchGrid(side, side))
        yield {"side": side, "patches": patches, "groups": len(container.unpack(data)[0].plan.group_sizes),
               "encode_passes": encode["passes"], "encode_calls": encode["calls"], "decode_passes": decode["passes"],
               "decode_calls": decode["calls"], "encode_s": encode_s, "log2_patches": float(np.log2(patches))}


@contextmanager
def timing_decode_parts(name: str) -> Iterator[tuple[dict[str, float], dict[str, int]]]:
    """Seconds (and ANS symbols) of each level codec while inside, and within them of the networks of
    model ``name`` (as the API loads it) and of the ANS coder's pushes and pops, by codec."""
    from bitswap_plugin import coders
    from bitswap_plugin.ans import AnsCoder

    model = zoo.load_model(name)
    seconds: dict[str, float] = {}
    symbols: dict[str, int] = {}
    codec = ["other"]

    def timed(label: Callable[[tuple], str], fn: Callable, count: Callable[[tuple], int] | None = None) -> Callable:
        def wrapper(*args, **kwargs):
            key = label(args)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds[key] = seconds.get(key, 0.0) + time.perf_counter() - start
                if count:
                    symbols[key] = symbols.get(key, 0) + count(args)

        return wrapper

    def entered(fn: Callable) -> Callable:
        def wrapper(step, *args):
            codec[0] = f"{type(step).__name__.lower()} {step.level}"
            return fn(step, *args)

        return wrapper

    originals = {(cls, "decode"): cls.decode for cls in (coders.Posterior, coders.Prior)}
    originals.update({(AnsCoder, way): getattr(AnsCoder, way) for way in ("push", "pop")})
    for cls in (coders.Posterior, coders.Prior):
        cls.decode = entered(timed(lambda args: f"{type(args[0]).__name__.lower()} {args[0].level}", originals[cls, "decode"]))
    AnsCoder.push = timed(lambda args: f"  {codec[0]}: ANS", originals[AnsCoder, "push"], lambda args: args[1].numel())
    AnsCoder.pop = timed(lambda args: f"  {codec[0]}: ANS", originals[AnsCoder, "pop"], lambda args: len(args[1]))
    networks = [network for network in ("posterior_codes", "prior_codes", "pass_codes") if hasattr(model, network)]
    for network in networks:
        setattr(model, network, timed(lambda args: f"  {codec[0]}: networks", getattr(model, network)))
    try:
        yield seconds, symbols
    finally:
        for (cls, attr), fn in originals.items():
            setattr(cls, attr, fn)
        for network in networks:
            delattr(model, network)


def decode_split(image: np.ndarray, models: list[str], runs: int) -> dict:
    """Per model, the median seconds of a decode of ``image`` and of its parts (:func:`timing_decode_parts`)."""
    out = {}
    for name in models:
        data = bsw.compress(image, model=name, method="bitswap")
        totals, parts = [], []
        for _ in range(runs):
            with timing_decode_parts(name) as (seconds, symbols):
                _, total = _timed(bsw.decompress, data)
            totals.append(total)
            parts.append(seconds)
        out[name] = {"decode_s": statistics.median(totals), "symbols": symbols,
                     "parts_s": {key: statistics.median(p.get(key, 0.0) for p in parts) for key in sorted(parts[0])}}
    return out


def _peak_rss() -> int:
    """This process's peak resident memory in bytes: Linux's VmHWM, which, unlike ``ru_maxrss``,
    does not inherit the parent's peak across fork and exec."""
    status = Path("/proc/self/status").read_text()
    return 1024 * int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))


def _rss_worker(args: argparse.Namespace) -> None:
    """In a fresh process: code once and print the peak RSS before and after."""
    torch.set_num_threads(args.threads)
    name = args.model or zoo.DEFAULT_MODELS[3]
    zoo.load_model(name)
    if args.rss_worker == "compress":
        image = mosaic(sorted(KODAK.glob("*.png")), args.rss_size)
        before = _peak_rss()
        data, seconds = _timed(bsw.compress, image, model=args.model)
        args.data.write_bytes(data)
    else:
        data = args.data.read_bytes()
        before = _peak_rss()
        _, seconds = _timed(bsw.decompress, data)  # checks the pixels against the stored checksum
    print(json.dumps({"peak_before_bytes": before, "peak_bytes": _peak_rss(), "seconds": seconds}))


def rss(side: int, model: str | None, threads: int) -> dict:
    """Peak RSS of compressing and of decompressing a ``side`` squared RGB photo, each in its own process."""
    out: dict = {"side": side, "pixels": side * side, "target_bytes": RSS_TARGET_BYTES}
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "image.bsw"
        for way in ("compress", "decompress"):
            command = [sys.executable, __file__, "--rss-worker", way, "--rss-size", str(side), "--threads", str(threads),
                       "--data", str(data)] + (["--model", model] if model else [])
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            out[way] = json.loads(done.stdout.strip().splitlines()[-1])
        out["bytes"] = data.stat().st_size
        out["patches"], out["groups"] = len(PatchGrid(side, side)), len(container.unpack(data.read_bytes())[0].plan.group_sizes)
    out["bpsp"] = 8 * out["bytes"] / (3 * side * side)
    out["within_target"] = max(out[way]["peak_bytes"] for way in ("compress", "decompress")) <= RSS_TARGET_BYTES
    return out


def _store(path: Path, section: str, value: dict) -> None:
    """Write one section of the results file, re-read first: another run may have stored its own meanwhile."""
    results = json.loads(path.read_text()) if path.exists() else {}
    results[section] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")


def _meta(args: argparse.Namespace) -> dict:
    uncommitted = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "bitswap_plugin"], cwd=ROOT,
                                 capture_output=True, text=True, check=False).stdout.splitlines()
    return {**run_metadata(), "time": time.strftime("%H:%M"), "cores": os.cpu_count(), "threads": args.threads,
            "load_average": os.getloadavg(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "uncommitted": uncommitted, "models": args.models}


@contextmanager
def _spinning(count: int) -> Iterator[None]:
    """``count`` processes that keep a core busy each while the block runs."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


BUSY_SETTINGS = (("default", None), ("default", 1), ("ACTIVE", None))
"""(OMP_WAIT_POLICY, OMP_NUM_THREADS) of the busy section: the command as it is, on one thread, spinning."""


def busy(image_path: Path, extra_load: int, runs: int) -> Iterator[dict]:
    """Seconds of ``bitswap compress`` and ``decompress`` (fresh processes) by load, wait policy and threads."""
    with tempfile.TemporaryDirectory() as folder:
        source, coded, restored = Path(folder) / "in.png", Path(folder) / "x.bsw", Path(folder) / "out.png"
        Image.open(image_path).convert("RGB").save(source)
        streams = set()
        for load in (0, extra_load):
            for policy, threads in BUSY_SETTINGS:
                env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
                if policy != "default":
                    env["OMP_WAIT_POLICY"] = policy
                if threads:
                    env["OMP_NUM_THREADS"] = str(threads)
                seconds: dict[str, list[float]] = {"compress": [], "decompress": []}
                with _spinning(load):
                    for _ in range(runs):
                        for command, args in (("compress", [source, "-o", coded, "--method", "bitswap"]), ("decompress", [coded, "-o", restored])):
                            start = time.perf_counter()
                            subprocess.run([sys.executable, "-m", "bitswap_plugin.cli", command, *map(str, args), "-q"], env=env, check=True)
                            seconds[command].append(time.perf_counter() - start)
                        streams.add(coded.read_bytes())
                assert np.array_equal(np.asarray(Image.open(restored)), np.asarray(Image.open(source)))
                yield {"extra_busy_processes": load, "wait_policy": policy, "threads": threads or "default", "compress": _summary(seconds["compress"]),
                       "decompress": _summary(seconds["decompress"]), "same_bytes": len(streams) == 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=["timing", "split", "passes", "rss", "busy"], default=["timing", "split", "passes", "rss", "busy"])
    parser.add_argument("--busy", type=int, default=2, help="spinning processes added for the busy section (default: 2)")
    parser.add_argument("--model", nargs="+", default=None,
                        help="model(s): timing measures each, the other sections the first (default: the shipped default)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--image", type=Path, default=KODAK / "kodim05.png", help="the timing image")
    parser.add_argument("--gray", action="store_true", help="time the image converted to L (default model: the grey one)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128, 256, 512, 1024])
    parser.add_argument("--rss-sizes", type=int, nargs="+", default=[4096])
    parser.add_argument("--rss-size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "speed.json")
    parser.add_argument("--rss-worker", choices=["compress", "decompress"], help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    models = args.models = args.model or [zoo.DEFAULT_MODELS[1 if args.gray else 3]]
    args.model = models[0] if args.model else None
    if args.rss_worker:
        _rss_worker(args)
        return
    torch.set_num_threads(args.threads)
    for section in args.only:
        meta = _meta(args)
        with Image.open(args.image) as image:
            pixels = np.asarray(image.convert("L" if args.gray else "RGB"))
        if section == "split":
            out = {"image": args.image.name, "mode": "L" if args.gray else "RGB", **decode_split(pixels, models, args.runs)}
            print(json.dumps(out, indent=2), flush=True)
            print("\n| part | " + " | ".join(f"{name} s (symbols)" for name in models) + " |\n|---|" + "---|" * len(models))
            for key in sorted({key for name in models for key in out[name]["parts_s"]}, key=lambda k: (k.strip().split(":")[0], k.startswith(" "), k)):
                cells = [f"{out[n]['parts_s'].get(key, 0):.2f}" + (f" ({out[n]['symbols'][key]:,})" if key in out[n]["symbols"] else "") for n in models]
                print(f"| {key.strip()} | " + " | ".join(cells) + " |")
            print("| decode | " + " | ".join(f"{out[n]['decode_s']:.2f}" for n in models) + " |")
            _store(args.json, section, {"meta": meta, **out})
            continue
        if section == "timing":
            out = {"image": args.image.name, "mode": "L" if args.gray else "RGB", **timing(pixels, models, args.runs)}
            print(json.dumps(out, indent=2), flush=True)
            print("\n| codec | encode s (median) | decode s (median) | encode, decode / first | bits/subpixel |\n|---|---|---|---|---|")
            for name in [*models, "jpegxl"]:
                r = out[name]
                ratio = r.get(f"ratio_to_{models[0]}")
                versus = f"{ratio['encode_median']:.2f}×, {ratio['decode_median']:.2f}×" if ratio else ""
                print(f"| {name} | {r['encode']['median_s']:.2f} | {r['decode']['median_s']:.2f} | {versus} | {r['bpsp']:.3f} |")
            _store(args.json, section, {"meta": meta, **out})
            continue
        rows = []
        if section == "passes":
            source = passes(sorted(KODAK.glob("*.png")), args.sizes, args.model)
        elif section == "busy":
            source = busy(args.image, args.busy, args.runs)
        else:
            source = (rss(side, args.model, args.threads) for side in args.rss_sizes)
        for row in source:  # stored row by row: a long run keeps what it measured
            print(json.dumps(row), flush=True)
            rows.append(row)
            _store(args.json, section, {"meta": meta, "rows": rows})
        if section == "passes":
            print("\n| side | patches | log2 patches | groups | passes (encode) | passes (decode) | network calls |\n|---|---|---|---|---|---|---|")
            for r in rows:
                print(f"| {r['side']} | {r['patches']} | {r['log2_patches']:.0f} | {r['groups']} | {r['encode_passes']} "
                      f"| {r['decode_passes']} | {r['encode_calls']} |")
        if section == "busy":
            print("\n| extra busy processes | wait policy | threads | compress s (best / median) | decompress s (best / median) | same bytes |\n|---|---|---|---|---|---|")
            for r in rows:
                print(f"| {r['extra_busy_processes']} | {r['wait_policy']} | {r['threads']} | {r['compress']['best_s']:.2f} / {r['compress']['median_s']:.2f} "
                      f"| {r['decompress']['best_s']:.2f} / {r['decompress']['median_s']:.2f} | {r['same_bytes']} |")

if __name__ == "__main__":
    main()
