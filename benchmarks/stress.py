"""Concurrency stress: many threads and processes coding at once, every result checked.

    python benchmarks/stress.py [--threads 16] [--rounds 50] [--processes 4] [--process-rounds 10]
                                [--process-threads 4] [--models tiny|default] [--torch-threads 1]
                                [--timeout 1800] [--json PATH]

Three workloads:

* **load race**: the threads, released together by a barrier, ask the zoo for
  each model before anything has loaded it; they must all get the same object.
* **threads**: T threads share one Zarr v3 array and one Zarr v2 array (a chunk
  per thread plus ``SHARED_CHUNKS`` that nobody writes). Round j of thread i
  makes one API round trip, alternately of a pool image that other threads code
  at the same moment (the stream must equal the one-thread stream) and of an
  image of its own (it must decode to its pixels); then, in each array, rewrites
  its own chunk, reads it back, and re-reads a shared chunk. At the end each
  array is read whole and checked.
* **processes**: P forkserver processes (fresh interpreters that share nothing
  but the imported code and the installed model files) each race-load the
  models from their own threads, make round trips, and write disjoint chunks of
  one v3 and one v2 directory store; the parent then reads both stores.

Every worker runs under a deadline: a thread or process still running at the
deadline is a failure (a deadlock fails rather than hangs). Prints round trips
per second, failures, wall time and peak RSS; exits with status 1 on any
failure. ``tests/test_concurrency.py`` runs the same functions at CI size.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

import numpy as np
import torch
import zarr
from PIL import Image

import bitswap_plugin as bsw
from bitswap_plugin import BitSwap, BitSwapCodec, zoo

POOL = (
    ((32, 64, 3), "bitswap"),
    ((32, 64), "bbans"),
    ((2, 32, 32, 3), "bitswap"),
    ((32, 32, 2), "bitswap"),
    ((16, 16, 3), "bitswap"),
    ((24, 24), "bbans"),
)
"""(shape, method) of the round-trip images: two or more patches run the network, one patch only the deflated seed."""

CHUNK = (32, 32, 3)
"""Zarr chunks are one image each: one patch, so chunk traffic is dominated by Zarr and the store, not the network."""
SHARED_CHUNKS = 4
CHUNKS_PER_PROCESS = 2
TINY = {3: "tiny-rgb", 1: "tiny-gray"}


@dataclass
class Report:
    """One workload's outcome: operations by kind (round trips, model loads), failures (empty when all is well),
    wall time, peak RSS."""

    name: str
    counts: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    peak_rss_mib: float = 0.0

    def line(self) -> str:
        total = sum(self.counts.values())
        kinds = " + ".join(f"{count} {kind}" for kind, count in self.counts.items())
        return (f"{self.name}: {kinds} = {total} in {self.wall_s:.1f} s ({total / max(self.wall_s, 1e-9):.1f}/s), "
                f"{len(self.failures)} failures, peak RSS {self.peak_rss_mib:.0f} MiB")


def peak_rss_mib() -> float:
    """This process's peak resident set size so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


_SAMPLE = np.asarray(Image.open(files("bitswap_plugin") / "samples" / "astronaut.png").convert("RGB"))


def image(shape: tuple[int, ...], index: int) -> np.ndarray:
    """A crop of the sample photo shaped (H, W), (H, W, C) or (N, H, W, C), different for each ``index``."""
    frames, height, width, channels = shape if len(shape) == 4 else (1, *shape[:2], shape[2] if len(shape) == 3 else 1)
    rgba = np.concatenate([_SAMPLE, _SAMPLE[..., 1:2]], axis=2)
    rows, cols = rgba.shape[0] - height, rgba.shape[1] - width
    tops = [((37 * index + 11 * frame) % rows, (53 * index + 7 * frame) % cols) for frame in range(frames)]
    crops = [rgba[y : y + height, x : x + width, :channels] for y, x in tops]
    return np.ascontiguousarray(np.stack(crops).reshape(shape))


def chunk_image(chunk: int, version: int) -> np.ndarray:
    """What version ``version`` of chunk ``chunk`` holds (``array[chunk]`` of :func:`create_array`)."""
    return image(CHUNK, 1000 * chunk + version)


def model_names(models: str) -> list[str]:
    """The models a run uses: the tiny ones, or the defaults for ``models="default"``."""
    return list(TINY.values()) if models == "tiny" else list(zoo.DEFAULT_MODELS.values())


def model_for(shape: tuple[int, ...], models: str) -> str | None:
    """The model for an image: the tiny model for its channel count, or None (the default) for ``models="default"``."""
    channels = shape[-1] if len(shape) >= 3 else 1
    return TINY[3 if channels >= 3 else 1] if models == "tiny" else None


def create_array(path: Path, chunks: int, zarr_format: int, models: str) -> zarr.Array:
    """A ``chunks``-chunk directory store holding :func:`chunk_image` version 0 of every chunk."""
    model = model_for(CHUNK, models)
    if zarr_format == 2:
        coding = {"compressors": BitSwap(model=model)}
    else:
        coding = {"serializer": BitSwapCodec(model=model), "compressors": None}
    array = zarr.create_array(path, shape=(chunks, *CHUNK), chunks=(1, *CHUNK), dtype="uint8", zarr_format=zarr_format, **coding)
    array[...] = np.stack([chunk_image(chunk, 0) for chunk in range(chunks)])
    return array


def check_store(path: Path, versions: list[int]) -> list[str]:
    """Read a store whole, afresh; chunk c must hold version ``versions[c]``."""
    stored = zarr.open_array(path, mode="r")[...]
    return [f"{path.name} chunk {chunk} does not hold version {version}"
            for chunk, version in enumerate(versions) if not np.array_equal(stored[chunk], chunk_image(chunk, version))]


def attempt(failures: list[str], label: str, check: Callable[..., str | None], *args: object) -> bool:
    """Run ``check(*args)``; an exception or a returned problem is recorded as a failure. True if it passed."""
    try:
        problem = check(*args)
    except Exception as exc:  # noqa: BLE001 - any exception is a failure to report, not to stop on
        problem = repr(exc)
    if problem:
        failures.append(f"{label}: {problem}")
    return not problem


def in_threads(count: int, work: Callable[[int], Counter], timeout: float, failures: list[str]) -> Counter:
    """Run ``work(i)`` for i < ``count`` in daemon threads released together; the sum of their counters.

    An exception is a failure; so is a thread still running after ``timeout``
    seconds (daemon threads, so a deadlocked one cannot keep the caller waiting).
    """
    barrier = threading.Barrier(count)
    results: list[Counter] = []

    def run(index: int) -> None:
        try:
            barrier.wait(timeout)
            results.append(work(index))
        except Exception as exc:  # noqa: BLE001 - reported below, like a failed check
            failures.append(f"thread {index}: {exc!r}")

    threads = [threading.Thread(target=run, args=(index,), daemon=True) for index in range(count)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    stuck = sum(thread.is_alive() for thread in threads)
    if stuck:
        failures.append(f"{stuck} of {count} threads still running after {timeout:.0f} s (deadlock?)")
    return sum(results, Counter())


def load_race(names: list[str], threads: int, timeout: float, report: Report) -> dict[str, list[object]]:
    """Release ``threads`` threads at once to load each model; name -> the objects they got (all one, if all is well)."""
    got: dict[str, list[object]] = {name: [] for name in names}

    def work(_: int) -> Counter:
        for name in names:
            got[name].append(zoo.load_model(name))
        return Counter({"model loads": len(names)})

    start = time.perf_counter()
    report.counts += in_threads(threads, work, timeout, report.failures)
    report.wall_s += time.perf_counter() - start
    for name, models in got.items():
        distinct = len({id(model) for model in models})
        if distinct != 1:
            report.failures.append(f"{len(models)} threads racing the first load of {name!r} got {distinct} models")
    return got


def round_trip(picture: np.ndarray, method: str, models: str, expected: bytes | None = None) -> str | None:
    """Compress and decompress ``picture``; the problem, if the stream differs from ``expected`` or the pixels come back wrong."""
    data = bsw.compress(picture, model=model_for(picture.shape, models), method=method)
    if expected is not None and data != expected:
        return "the stream differs from the one-thread stream of the same image"
    if not np.array_equal(bsw.decompress(data), picture):
        return "decoded pixels differ"
    return None


def chunk_holds(array: zarr.Array, chunk: int, version: int) -> str | None:
    """The problem, if the chunk does not read as version ``version``."""
    if np.array_equal(array[chunk], chunk_image(chunk, version)):
        return None
    return f"chunk {chunk} does not read as version {version}"


def chunk_round(array: zarr.Array, chunk: int, version: int) -> str | None:
    """Write version ``version`` of a chunk and read it back."""
    array[chunk] = chunk_image(chunk, version)
    return chunk_holds(array, chunk, version)


def thread_stress(root: Path, threads: int, rounds: int, models: str, timeout: float) -> Report:
    """The threads workload (module docstring) in ``root``: API, Zarr v3 and Zarr v2 round trips at once."""
    report = Report("threads")
    pool = [image(shape, index) for index, (shape, _) in enumerate(POOL)]
    references = [bsw.compress(picture, model=model_for(picture.shape, models), method=method)
                  for picture, (_, method) in zip(pool, POOL)]
    arrays = {f"zarr v{fmt}": create_array(root / f"threads-v{fmt}.zarr", threads + SHARED_CHUNKS, fmt, models) for fmt in (3, 2)}

    def work(index: int) -> Counter:
        done = Counter()
        for step in range(rounds):
            kind = (index + step) % len(POOL)
            shape, method = POOL[kind]
            if step % 2:  # an image of its own
                picture, expected = image(shape, 100 + index * rounds + step), None
            else:  # a pool image, coded by other threads at the same time
                picture, expected = pool[kind], references[kind]
            label = f"thread {index} round {step}"
            done["api"] += attempt(report.failures, f"{label} api", round_trip, picture, method, models, expected)
            shared = threads + (index + step) % SHARED_CHUNKS
            for name, array in arrays.items():
                done[name] += attempt(report.failures, f"{label} {name}", chunk_round, array, index, step + 1)
                attempt(report.failures, f"{label} {name}", chunk_holds, array, shared, 0)
        return done

    start = time.perf_counter()
    report.counts = in_threads(threads, work, timeout, report.failures)
    report.wall_s = time.perf_counter() - start
    for fmt in (3, 2):
        report.failures += check_store(root / f"threads-v{fmt}.zarr", [rounds] * threads + [0] * SHARED_CHUNKS)
    report.peak_rss_mib = peak_rss_mib()
    return report


@dataclass(frozen=True)
class Job:
    """One process's share of the processes workload."""

    index: int
    stores: tuple[Path, ...]
    threads: int
    rounds: int
    models: str
    timeout: float


def process_worker(job: Job) -> Report:
    """Race-load the models, make ``job.rounds`` round trips, write this process's chunks of each store ``job.rounds`` times."""
    torch.set_num_threads(1)
    report = Report(f"process {job.index}")
    load_race(model_names(job.models), job.threads, job.timeout, report)
    arrays = {f"zarr v{fmt}": zarr.open_array(path, mode="r+") for fmt, path in zip((3, 2), job.stores)}
    chunks = range(job.index * CHUNKS_PER_PROCESS, (job.index + 1) * CHUNKS_PER_PROCESS)
    for step in range(job.rounds):
        shape, method = POOL[(job.index + step) % len(POOL)]
        picture = image(shape, 5000 + 100 * job.index + step)
        label = f"process {job.index} round {step}"
        report.counts["api"] += attempt(report.failures, f"{label} api", round_trip, picture, method, job.models)
        for name, array in arrays.items():
            for chunk in chunks:
                report.counts[name] += attempt(report.failures, f"{label} {name}", chunk_round, array, chunk, step + 1)
    report.peak_rss_mib = peak_rss_mib()
    return report


def forkserver() -> multiprocessing.context.BaseContext:
    """Processes forked from a server that has imported torch, zarr and the package (not loaded any model):
    fresh interpreters without paying the imports (seconds) for each."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["bitswap_plugin.cli", "zarr"])
    return context


def process_stress(root: Path, processes: int, rounds: int, threads: int, models: str, timeout: float) -> Report:
    """The processes workload (module docstring) in ``root``."""
    report = Report("processes")
    stores = tuple(root / f"processes-v{fmt}.zarr" for fmt in (3, 2))
    for fmt, path in zip((3, 2), stores):
        create_array(path, processes * CHUNKS_PER_PROCESS, fmt, models)
    jobs = [Job(index, stores, threads, rounds, models, timeout) for index in range(processes)]
    start = time.perf_counter()
    with forkserver().Pool(processes, maxtasksperchild=1) as workers:  # one job per process; exiting kills stragglers
        try:
            results = workers.map_async(process_worker, jobs, chunksize=1).get(timeout)
            workers.close()
            workers.join()
        except multiprocessing.TimeoutError:
            results = []
            report.failures.append(f"processes still running after {timeout:.0f} s (deadlock?)")
    report.wall_s = time.perf_counter() - start
    for result in results:
        report.counts += result.counts
        report.failures += result.failures
        report.peak_rss_mib = max(report.peak_rss_mib, result.peak_rss_mib)
    for path in stores:
        report.failures += check_store(path, [rounds] * (processes * CHUNKS_PER_PROCESS))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=50, help="rounds per thread")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--process-rounds", type=int, default=10, help="rounds per process")
    parser.add_argument("--process-threads", type=int, default=4, help="threads racing the model load in each process")
    parser.add_argument("--models", choices=["tiny", "default"], default="tiny")
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=1800, help="deadline of each workload, seconds")
    parser.add_argument("--json", type=Path, help="also write the reports here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.torch_threads)
    machine = {"cpus": os.cpu_count(), "load_average_at_start": os.getloadavg(), "python": platform.python_version(),
               "torch": torch.__version__, "zarr": zarr.__version__}
    race = Report("load race")
    load_race(model_names(args.models), args.threads, args.timeout, race)
    race.peak_rss_mib = peak_rss_mib()
    with tempfile.TemporaryDirectory() as root:
        reports = [
            race,
            thread_stress(Path(root), args.threads, args.rounds, args.models, args.timeout),
            process_stress(Path(root), args.processes, args.process_rounds, args.process_threads, args.models, args.timeout),
        ]
    for report in reports:
        print(report.line())
        for failure in report.failures[:20]:
            print("  ", failure)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "machine": machine,
                                         "reports": [{**vars(report), "counts": dict(report.counts)} for report in reports]}, indent=1))
    return 1 if any(report.failures for report in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
