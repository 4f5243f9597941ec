"""Fuzz the ``.bsw`` readers: ``decompress``, ``read_info``, the numcodecs codec and the Pillow plugin.

    python benchmarks/fuzz.py [--inputs 1000000] [--seconds S] [--workers 1] [--timeout 120]
                              [--rss-limit 3072] [--deep 0.001] [--seed 0] [--out benchmarks/fuzz-out]
    python benchmarks/fuzz.py --engine atheris [--inputs N] [--seconds S] [--timeout T] [--rss-limit MB]

:func:`check` is the oracle for one input: every reader must either refuse the
bytes with a documented error (a ``BitSwapError``; from Pillow an ``OSError``,
which includes ``UnidentifiedImageError``, or ``DecompressionBombError``) or
return pixels, and all of them must agree: the same refusal, or the same pixels
in the shape ``read_info`` promised. Anything else (another exception, a
disagreement) is a *crash*.

The inputs are mutations of real files (:func:`seed_files`: tiny images of every
mode, a stack, both methods, coded by the tiny models and by the default
polyphase models, some all-deflate and some through the network) made by
:func:`mutate`: bit flips, byte edits, insertions, deletions, splices, truncations, and edits of parsed header fields
(u8/u32 fields, varints re-encoded with other lengths, model names and
digests, whole groups added or removed), after which the header CRC is
recomputed nine times in ten, so mutations reach the checks behind it.

Engine ``mutate`` (default): worker processes run inputs under a watchdog that
kills a worker whose input runs past ``--timeout`` (a *hang*) or whose RSS
passes ``--rss-limit`` (a *memory* failure), or notices one that died (a
*crash*: segfault, abort); every failing input is saved under ``--out``
(git-ignored) with a ``.txt`` saying what happened. Inputs decoded through the
network take about a second each, so a seed coded through it is picked with
probability ``--deep`` (the others decode in milliseconds). Prints progress and
a summary, writes ``report.json`` in ``--out``; exits 1 on any failure.

Engine ``atheris``: coverage-guided libFuzzer over the same :func:`check`, with
the package's code instrumented and :func:`mutate` mixed into libFuzzer's own
mutations as a custom mutator; libFuzzer stops at the first failure.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import io
import json
import multiprocessing
import os
import random
import re
import resource
import struct
import sys
import time
import traceback
import types
import warnings
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import bitswap_plugin as bsw
from bitswap_plugin import api, coders, zoo
from bitswap_plugin.errors import BitSwapError
from bitswap_plugin.fileformat import MODES
from bitswap_plugin.numcodecs_codec import BitSwap

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "bitswap_plugin" / "samples" / "astronaut.png"
MAX_LENGTH = 1 << 16
"""Longest input the mutator makes (the seeds are a few kB)."""
PILLOW_ERRORS = (OSError, Image.DecompressionBombError)
"""What the Pillow front end may raise: its own kinds (``UnidentifiedImageError`` is an OSError)."""
_VARIABLE = re.compile(r"'[^']*'|\(.*\)|[0-9a-f]*…|\d+")
"""What varies in an error message (names, hashes, numbers): left out of the outcome tallies."""


class FuzzFailure(AssertionError):
    """An input made a reader raise an undocumented error, or the readers disagree."""


# -- the oracle --------------------------------------------------------------


def _run(reader: Callable[[], object], allowed: type | tuple[type, ...], name: str) -> object:
    """``reader()``'s result, or the allowed exception it raised; anything else is a FuzzFailure."""
    try:
        return reader()
    except allowed as exc:
        return exc
    except Exception as exc:  # noqa: BLE001 - any other exception is the finding
        raise FuzzFailure(f"{name} raised {type(exc).__name__}: {exc}\n{traceback.format_exc()}") from exc


def _pillow_frames(data: bytes) -> np.ndarray:
    """Every frame as Pillow's ``Image.open(...).load()`` gives it, stacked (N, H, W, C)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data), formats=["BSW"]) as image:
            frames = []
            for index in range(image.n_frames):
                image.seek(index)
                image.load()
                frames.append(np.asarray(image).reshape(image.height, image.width, -1))
    return np.stack(frames)


@functools.cache
def _codec() -> BitSwap:
    """The numcodecs codec with the NHWC layout, so that decoding also checks ``read_info``'s shape."""
    return BitSwap(layout="NHWC")


def check(data: bytes) -> str:
    """Run every reader on ``data``; raise :class:`FuzzFailure` unless each refuses it with a
    documented error or all return the same pixels. Returns the outcome, for statistics."""
    info = _run(lambda: bsw.read_info(data), BitSwapError, "read_info")
    pixels = _run(lambda: bsw.decompress(data), BitSwapError, "decompress")
    codec = _run(lambda: _codec().decode(data), BitSwapError, "numcodecs decode")
    pillow = _run(lambda: _pillow_frames(data), PILLOW_ERRORS, "Pillow open + load")
    if isinstance(pixels, np.ndarray):
        if not isinstance(info, api.ImageInfo) or info.shape != pixels.shape:
            raise FuzzFailure(f"decompress gave shape {pixels.shape}, read_info said {info!r}")
        stack = pixels.reshape(info.frames, info.height, info.width, len(info.mode))
        for name, other in (("numcodecs", codec), ("Pillow", pillow)):
            if not isinstance(other, np.ndarray) or not np.array_equal(other, stack):
                raise FuzzFailure(f"{name} disagrees with decompress: {other!r}")
        return "decoded"
    if not isinstance(codec, BitSwapError) or type(codec) is not type(pixels):
        raise FuzzFailure(f"decompress raised {pixels!r}, numcodecs gave {codec!r}")
    if not isinstance(pillow, Exception):
        raise FuzzFailure(f"decompress raised {pixels!r}, Pillow decoded the image")
    if isinstance(info, BitSwapError) and not isinstance(pillow, Image.UnidentifiedImageError):
        raise FuzzFailure(f"read_info raised {info!r}, Pillow identified the file ({pillow!r})")
    return f"{type(pixels).__name__}: {re.sub(_VARIABLE, '_', str(pixels))}"


# -- seed files --------------------------------------------------------------


@functools.cache
def seed_files(deep: bool = True) -> dict[str, bytes]:
    """Real ``.bsw`` files of tiny images cut from the bundled sample: name -> bytes.

    Those ``compress`` stores all-deflated (the method is only a header byte there),
    and with ``deep`` files named ``deep-...``, coded through the network: a seed patch
    and one coded patch, the fewest a network decode can have; for those the
    all-deflate option of ``compress`` is switched off while they are written.
    Seeds of more than one patch are switched off for all of them. Two deep files
    are smooth images coded by the default models, whose headers carry the scale
    offsets and smooth-area blends of every likelihood step.
    """
    with Image.open(SAMPLE) as image:
        rgb = np.asarray(image.convert("RGB"))
    gray = np.asarray(Image.fromarray(rgb).convert("L"))
    rgba = np.dstack([rgb, 255 - gray // 3])
    stored = {  # name: (pixels, model, method)
        "l-8x8-bbans": (gray[100:108, 100:108], "tiny-gray", "bbans"),
        "la-20x30-bitswap": (rgba[50:70, 60:90, 2:], "tiny-gray", "bitswap"),
        "rgb-17x40-bbans": (rgb[200:217, 150:190], "tiny-rgb", "bbans"),
        "rgba-33x33-bitswap": (rgba[:33, :33], "tiny-rgb", "bitswap"),
        "stack-2x20x16-bbans": (rgb[:40, 100:116].reshape(2, 20, 16, 3), "tiny-rgb", "bbans"),
    }
    yy, xx = np.mgrid[0:32, 0:64]
    waves = (96 + 60 * np.sin(yy / 8.0) + 50 * np.cos(xx / 7.0)).astype(np.uint8)
    coded = {
        "deep-l-32x64-bitswap": (gray[100:132, 100:164], "tiny-gray", "bitswap"),
        "deep-l-32x64-bbans": (gray[100:132, 100:164], "tiny-gray", "bbans"),
        "deep-rgb-40x24-bbans": (rgb[100:140, 100:124], "tiny-rgb", "bbans"),
        "deep-rgba-16x24-bitswap": (rgba[200:216, 200:224], "tiny-rgb", "bitswap"),
        # the default (polyphase, mixture) models on smooth content: headers with scale offsets and blends
        "deep-rgb-32x64-polyphase-bitswap": (np.dstack([waves, waves // 2 + 30, 255 - waves]), None, "bitswap"),
        "deep-l-32x64-polyphase-bbans": ((xx // 8 * 30 + yy // 16 * 5).astype(np.uint8), None, "bbans"),
    }
    files = {}
    for group, small in ((stored, 1 << 30), (coded if deep else {}, 0)):
        saved = api._SMALL_IMAGE_PATCHES, coders.MAX_SEED_PATCHES
        api._SMALL_IMAGE_PATCHES, coders.MAX_SEED_PATCHES = small, 1
        try:
            for name, (array, model, method) in group.items():
                files[name] = bsw.compress(array, model=model, method=method)
        finally:
            api._SMALL_IMAGE_PATCHES, coders.MAX_SEED_PATCHES = saved
    return files


# -- mutations ---------------------------------------------------------------


def _varint(data: bytes, at: int) -> tuple[int, int]:
    """Read a varint leniently (at most 10 bytes, like the reader): (value, end offset)."""
    value = 0
    for i in range(10):
        value |= (data[at + i] & 0x7F) << (7 * i)
        if not data[at + i] & 0x80:
            break
    return value, at + i + 1


def header_fields(data: bytes) -> tuple[list[tuple[int, int, str]], int] | None:
    """(offset, size, kind) of each header field, and the offset of the header CRC, parsed
    leniently (values unchecked); None where the bytes end inside the header. Kinds: ``u8``,
    ``u32``, ``name`` (a model name), ``digest``, ``varint`` and ``groups`` (the group count)."""
    fields = [(8 + i, 1, "u8") for i in range(5)] + [(13 + 4 * i, 4, "u32") for i in range(4)] + [(29, 1, "u8")]
    try:
        at = 30
        for _ in range(data[29]):
            fields += [(at, 1, "u8"), (at + 1, data[at], "name"), (at + 1 + data[at], 32, "digest")]
            at += 1 + data[at] + 32
            for since in (5, 6):  # the model's scale offsets (version 5 on), smooth-area blends (6 on): a count, then bytes
                if data[8] >= since:
                    fields += [(at + i, 1, "u8") for i in range(1 + data[at])]
                    at += 1 + data[at]
        planes = len(list(MODES.values())[data[9]].planes) if data[9] < len(MODES) else 1
        fields += [(at + i, 1, "u8") for i in range(planes)]
        at += planes
        index, count = 0, 3  # seed patches, seed length, group count; then two per group and three more
        while index < count:
            value, end = _varint(data, at)
            fields.append((at, end - at, "groups" if index == 2 else "varint"))
            count += 2 * value + 3 if index == 2 else 0
            index, at = index + 1, end
        data[at + 3]  # the CRC is there too
    except IndexError:
        return None
    return fields, at


def fix_crc(data: bytes) -> bytes:
    """``data`` with its header CRC recomputed, where the header can be parsed that far."""
    parsed = header_fields(data)
    if parsed is None:
        return data
    at = parsed[1]
    return data[:at] + struct.pack("<I", zlib.crc32(data[:at])) + data[at + 4 :]


_INTERESTING = (0, 1, 2, 3, 4, 7, 8, 16, 31, 32, 33, 64, 127, 128, 255, 256, 257, 1023, 1024, 1032, 4095, 4096, 4097)
_INTERESTING += (65535, 65536, 1 << 24, (1 << 28) + 1, (1 << 31) - 1, 1 << 31, (1 << 32) - 1, 1 << 32, 1 << 63, (1 << 70) - 1)
_MODEL_NAMES = (b"tiny-rgb", b"tiny-gray", b"bitswap-rgb", b"bitswap-gray", b"", b"../tiny-rgb", b"\xff\xfe", b"x" * 255)


def leb128(value: int, extra: int = 0) -> bytes:
    """``value`` as a varint, padded with ``extra`` redundant continuation bytes (overlong)."""
    out = bytearray()
    while True:
        out.append(value & 0x7F)
        value >>= 7
        if not value:
            break
        out[-1] |= 0x80
    if extra:
        out[-1] |= 0x80
        out += b"\x80" * (extra - 1) + b"\x00"
    return bytes(out)


def _number(rng: random.Random, old: int) -> int:
    return rng.choice(_INTERESTING + (old - 1, old + 1, 2 * old, old // 2, old ^ (1 << rng.randrange(32))))


def _edit_field(data: bytes, rng: random.Random) -> bytes:
    """Rewrite one parsed header field: a number, a varint (also overlong or unterminated),
    a model name or digest, or the group list (a group added or removed)."""
    parsed = header_fields(data)
    if parsed is None:
        return _flip(data, rng)
    at, size, kind = rng.choice(parsed[0])
    old = int.from_bytes(data[at : at + size], "little")
    if kind in ("u8", "u32"):
        new = (_number(rng, old) % (1 << (8 * size))).to_bytes(size, "little")
    elif kind == "name":
        name = rng.choice(_MODEL_NAMES)
        return data[: at - 1] + bytes([len(name)]) + name + data[at + size :]
    elif kind == "digest":
        new = rng.choice([bytes(32), rng.randbytes(32), bytes.fromhex(zoo.model_hash(rng.choice(sorted(bsw.available_models()))))])
    elif kind == "groups" and rng.random() < 0.5:
        count, end = _varint(data, at)
        if count and rng.random() < 0.5:  # drop the first group
            return data[:at] + leb128(count - 1) + data[_varint(data, _varint(data, end)[1])[1] :]
        group = leb128(rng.choice((1, 2, 256, 257))) + leb128(rng.choice((0, 1, 32)))
        return data[:at] + leb128(count + 1) + group + data[end:]
    else:
        new = b"\xff" * 11 if rng.random() < 0.05 else leb128(_number(rng, _varint(data, at)[0]) % (1 << 70), rng.choice((0, 0, 0, 1, 3)))
    return data[:at] + new + data[at + size :]


def _flip(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 8))):
        if out:
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def _set_byte(data: bytes, rng: random.Random) -> bytes:
    if not data:
        return bytes([rng.randrange(256)])
    at = rng.randrange(len(data))
    return data[:at] + bytes([rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))]) + data[at + 1 :]


def _insert(data: bytes, rng: random.Random) -> bytes:
    at, start = rng.randrange(len(data) + 1), rng.randrange(len(data) + 1)
    chunk = rng.randbytes(rng.randint(1, 32)) if rng.random() < 0.5 else data[start : start + rng.randint(1, 256)]
    return data[:at] + chunk + data[at:]


def _delete(data: bytes, rng: random.Random) -> bytes:
    at = rng.randrange(len(data) + 1)
    return data[:at] + data[at + rng.choice((1, 1, 2, 4, rng.randint(1, 256))) :]


def _cut(data: bytes, rng: random.Random) -> bytes:
    """Truncate, or append bytes."""
    if rng.random() < 0.5:
        return data[: rng.randrange(len(data) + 1)]
    return data + (bytes(rng.randint(1, 8)) if rng.random() < 0.5 else rng.randbytes(rng.randint(1, 64)))


_MUTATORS: tuple[tuple[Callable[[bytes, random.Random], bytes], int], ...] = (
    (_flip, 4),
    (_set_byte, 2),
    (_insert, 1),
    (_delete, 1),
    (_cut, 1),
    (_edit_field, 6),
)


def mutate(data: bytes, corpus: Sequence[bytes], rng: random.Random) -> bytes:
    """One to three stacked mutations of ``data`` (or a splice with another corpus file),
    with the header CRC recomputed nine times in ten; at most MAX_LENGTH bytes."""
    if rng.random() < 0.05:
        other = rng.choice(corpus)
        data = data[: rng.randrange(len(data) + 1)] + other[rng.randrange(len(other) + 1) :]
    functions, weights = zip(*_MUTATORS)
    for mutator in rng.choices(functions, weights, k=rng.choice((1, 1, 2, 3))):
        data = mutator(data, rng)
    if rng.random() < 0.9:
        data = fix_crc(data)
    return data[:MAX_LENGTH]


# -- the driver --------------------------------------------------------------


class _Slot:
    """What a worker shares with the watchdog: the input it runs now, since when, and how many it ran."""

    def __init__(self, context: multiprocessing.context.BaseContext) -> None:
        self.buffer = context.RawArray("B", MAX_LENGTH)
        self.length = context.RawValue("q", 0)
        self.started = context.RawValue("d", 0.0)
        self.count = context.RawValue("q", 0)

    def current(self) -> bytes:
        return bytes(memoryview(self.buffer).cast("B")[: self.length.value])


def _worker(slot: _Slot, corpus: list[bytes], deep: list[bool], chance: float, seed: int, queue, stop) -> None:
    """Run mutated inputs until ``stop``; report counts, outcomes and failures on ``queue``."""
    torch.set_num_threads(1)
    rng = random.Random(seed)
    shallow = [data for data, is_deep in zip(corpus, deep) if not is_deep] or corpus
    deep_seeds = [data for data, is_deep in zip(corpus, deep) if is_deep] or corpus
    for data in shallow:  # load the models before the watchdog times anything
        check(data)
    outcomes: Counter = Counter()
    slowest, last = (0.0, b""), time.monotonic()
    while not stop.is_set():
        data = mutate(rng.choice(deep_seeds if rng.random() < chance else shallow), corpus, rng)
        memoryview(slot.buffer).cast("B")[: len(data)] = data
        slot.length.value = len(data)
        slot.started.value = start = time.monotonic()
        try:
            outcomes[check(data)] += 1
        except FuzzFailure as exc:
            queue.put(("crash", data, str(exc)))
        now = time.monotonic()
        slot.started.value = 0.0
        slot.count.value += 1
        slowest = max(slowest, (now - start, data))
        if now - last > 1.0 or stop.is_set():
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            queue.put(("progress", dict(outcomes), slowest, peak))
            outcomes, last = Counter(), now


def _rss_mb(pid: int) -> float:
    """A process's resident set size in MiB (0 once it is gone)."""
    with contextlib.suppress(OSError):
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    return 0.0


class Fuzzer:
    """Worker processes under a watchdog, and the tallies of what they ran."""

    def __init__(self, corpus: dict[str, bytes], out: Path, workers: int, chance: float, seed: int, timeout: float, rss_limit: float) -> None:
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(["torch", "bitswap_plugin", "bitswap_plugin.numcodecs_codec"])  # quick restarts
        self.names, self.corpus = list(corpus), list(corpus.values())
        self.deep = [name.startswith("deep-") for name in self.names]
        self.out, self.chance, self.seed = out, chance, seed
        self.timeout, self.rss_limit = timeout, rss_limit
        self.queue, self.stop = self.context.Queue(), self.context.Event()
        self.finished, self.outcomes, self.failures = 0, Counter(), Counter()
        self.slowest, self.peak_rss, self.started = (0.0, b""), 0.0, 0
        self.workers = [self._start(index) for index in range(workers)]

    def _start(self, index: int) -> tuple[multiprocessing.Process, _Slot]:
        slot = _Slot(self.context)
        args = (slot, self.corpus, self.deep, self.chance, self.seed * 1000 + self.started, self.queue, self.stop)
        process = self.context.Process(target=_worker, args=args, daemon=True)
        process.start()
        self.started += 1
        return process, slot

    def _save(self, kind: str, data: bytes, message: str) -> None:
        """Keep a failing input (and what happened) under ``out``, named by its hash."""
        self.failures[kind] += 1
        name = f"{kind}-{zlib.crc32(data):08x}"
        (self.out / f"{name}.bsw").write_bytes(data)
        (self.out / f"{name}.txt").write_text(message + "\n")
        print(f"{kind.upper()}: {message.splitlines()[0]} (saved {self.out / name}.bsw)", flush=True)

    def _drain(self, wait: float) -> None:
        with contextlib.suppress(Exception):
            while True:
                message = self.queue.get(timeout=wait)
                if message[0] == "crash":
                    self._save("crash", message[1], message[2])
                else:
                    _, outcomes, slowest, peak = message
                    self.outcomes.update(outcomes)
                    self.slowest = max(self.slowest, slowest)
                    self.peak_rss = max(self.peak_rss, peak)
                wait = 0.0

    def _watch(self) -> None:
        """Restart a worker that died, hung on an input or grew past the RSS limit."""
        for index, (process, slot) in enumerate(self.workers):
            running = slot.started.value
            if not process.is_alive():
                problem = ("crash", f"the worker died (exit code {process.exitcode}) on this input")
            elif running and time.monotonic() - running > self.timeout:
                problem = ("hang", f"the input ran for more than {self.timeout} s")
            elif _rss_mb(process.pid) > self.rss_limit:
                problem = ("memory", f"the worker's RSS passed {self.rss_limit} MiB on this input")
            else:
                continue
            data = slot.current()
            process.kill()
            process.join()
            self.finished += slot.count.value + 1
            self._save(problem[0], data, problem[1])
            self.workers[index] = self._start(index)

    @property
    def inputs(self) -> int:
        """Inputs run so far, by all workers past and present (the last one of a killed worker included)."""
        return self.finished + sum(slot.count.value for _, slot in self.workers)

    def run(self, inputs: int, seconds: float) -> dict:
        """Fuzz until ``inputs`` have run or ``seconds`` have passed; returns the report."""
        start = last = time.monotonic()
        while self.inputs < inputs and time.monotonic() - start < seconds:
            self._drain(0.2)
            self._watch()
            if time.monotonic() - last > 60:
                last = time.monotonic()
                print(f"{self.inputs} inputs, {self.inputs / (last - start):.0f}/s, failures {dict(self.failures)}", flush=True)
        self.stop.set()
        for process, _ in self.workers:
            process.join(timeout=self.timeout)
            process.kill()
        self._drain(0.5)
        elapsed = time.monotonic() - start
        (self.out / "slowest.bsw").write_bytes(self.slowest[1])
        return {
            "inputs": self.inputs,
            "seconds": round(elapsed, 1),
            "inputs_per_second": round(self.inputs / elapsed, 1),
            "failures": dict(self.failures),
            "peak_worker_rss_mib": round(self.peak_rss, 1),
            "slowest_input_seconds": round(self.slowest[0], 3),
            "deep_chance": self.chance,
            "outcomes": dict(self.outcomes.most_common()),
        }


def _atheris(corpus: dict[str, bytes], out: Path, inputs: int, seconds: float, timeout: float, rss_limit: float) -> None:
    """Coverage-guided fuzzing with libFuzzer (atheris) over :func:`check`; does not return."""
    import atheris

    package = str(Path(bsw.__file__).parent)
    for function in [obj for obj in gc.get_objects() if isinstance(obj, types.FunctionType)]:
        if function.__code__.co_filename.startswith(package):
            atheris.instrument_func(function)
    seeds = list(corpus.values())

    def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
        rng = random.Random(seed)
        if rng.random() < 0.5:
            return fix_crc(atheris.Mutate(data, max_size))[:max_size]
        return mutate(data, seeds, rng)[:max_size]

    options = [f"-runs={inputs}", f"-max_total_time={int(seconds)}", f"-timeout={int(timeout)}", f"-rss_limit_mb={int(rss_limit)}"]
    options += [f"-max_len={MAX_LENGTH}", f"-artifact_prefix={out}/", str(out / "corpus")]
    atheris.Setup([sys.argv[0], *options], check, custom_mutator=custom_mutator)
    atheris.Fuzz()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=int, default=1_000_000, help="stop after this many inputs")
    parser.add_argument("--seconds", type=float, default=float("inf"), help="stop after this long")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (engine mutate)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds one input may run (a hang beyond)")
    parser.add_argument("--rss-limit", type=float, default=3072.0, help="MiB a worker may hold")
    parser.add_argument("--deep", type=float, default=0.001, help="chance of starting from a network-coded seed (atheris: 0 leaves them out)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "fuzz-out", help="failing inputs and report")
    parser.add_argument("--engine", choices=("mutate", "atheris"), default="mutate")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    (args.out / "corpus").mkdir(parents=True, exist_ok=True)
    corpus = seed_files(deep=args.engine == "mutate" or args.deep > 0)
    for name, data in corpus.items():
        (args.out / "corpus" / f"{name}.bsw").write_bytes(data)
    if args.engine == "atheris":
        _atheris(corpus, args.out, args.inputs, min(args.seconds, 2**31 - 1), args.timeout, args.rss_limit)
    fuzzer = Fuzzer(corpus, args.out, args.workers, args.deep, args.seed, args.timeout, args.rss_limit)
    report = fuzzer.run(args.inputs, args.seconds)
    report.update(workers=args.workers, seed=args.seed, seed_files=len(corpus), torch=torch.__version__, python=sys.version.split()[0])
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
