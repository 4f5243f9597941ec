"""Rate, speed and memory of codecs over a folder of images, written the way CompressAI does.

Every codec codes every image it supports, in one run and interleaved (so a
busy machine slows all codecs alike), and every output is decoded and
compared with the input: a codec that does not round-trip stops the run.
Rates are *bits per subpixel*: total bits over total subpixels (H x W x C).
"""

from __future__ import annotations

import ctypes
import json
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..fileformat import AUTO, METHODS
from ..images import IMAGE_SUFFIXES, images_in, to_array
from .codecs import Codec


class PeakMemory:
    """Peak resident memory added during a ``with`` block, in bytes (None where unsupported).

    Uses Linux's resettable high-water mark (``/proc/self/clear_refs``), so it
    sees every allocation — torch, numpy and C libraries alike — at no cost.
    The C heap's free pages are first handed back to the system (glibc's
    ``malloc_trim``): memory an earlier block freed stays resident otherwise, and
    a block that reuses it would add nothing (0 bytes for every image but the first).
    """

    _STATUS = Path("/proc/self/status")
    _MALLOC_TRIM = getattr(ctypes.CDLL(None), "malloc_trim", None) if sys.platform.startswith("linux") else None

    @classmethod
    def _field(cls, name: str) -> int:
        match = re.search(rf"^{name}:\s+(\d+) kB", cls._STATUS.read_text(), re.MULTILINE)
        return 1024 * int(match.group(1)) if match else 0

    def __enter__(self) -> PeakMemory:
        self.peak: int | None = None
        if self._MALLOC_TRIM is not None:
            self._MALLOC_TRIM(0)
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self._start = self._field("VmRSS")
        except OSError:
            self._start = None
        return self

    def __exit__(self, *exc_info) -> None:
        if self._start is not None:
            self.peak = max(0, self._field("VmHWM") - self._start)


@dataclass
class Measurement:
    """One codec on one image."""

    image: str
    subpixels: int
    pixels: int
    bytes: int
    encode_s: float
    decode_s: float
    peak_bytes: int | None


def load_image(path: Path, gray: bool = False) -> np.ndarray:
    """An image file as the uint8 array a codec takes (L, LA, RGB or RGBA; ``gray`` converts to L)."""
    with Image.open(path) as image:
        return np.asarray(image.convert("L")) if gray else to_array(image)


def image_paths(folder: Path, limit: int | None = None) -> list[Path]:
    """The image files of ``folder``, sorted by name, at most ``limit``."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder of images")
    paths = images_in(folder)
    if not paths:
        raise FileNotFoundError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return paths[:limit]


def measure(codec: Codec, name: str, image: np.ndarray) -> Measurement:
    """Encode, decode and verify one image."""
    with PeakMemory() as memory:
        start = time.perf_counter()
        data = codec.encode(image)
        encoded = time.perf_counter()
        decoded = codec.decode(data, image.shape)
        decode_s = time.perf_counter() - encoded
    if not np.array_equal(decoded, image):
        raise AssertionError(f"{codec.name} did not reproduce {name} exactly")
    return Measurement(name, image.size, image.shape[0] * image.shape[1], len(data), encoded - start, decode_s, memory.peak)


def run(codecs: Sequence[Codec], paths: Iterable[Path], *, gray: bool = False,
        report: Callable[[str], None] = print) -> dict[str, list[Measurement]]:
    """Measure every codec on every image it supports; returns codec name -> measurements."""
    results: dict[str, list[Measurement]] = {codec.name: [] for codec in codecs}
    for path in paths:
        image = load_image(path, gray)
        line = []
        for codec in codecs:
            if codec.codes(image):
                m = measure(codec, path.name, image)
                results[codec.name].append(m)
                line.append(f"{codec.name} {8 * m.bytes / m.subpixels:.3f}")
        report(f"{path.name}: " + ", ".join(line))
    return {name: rows for name, rows in results.items() if rows}


@dataclass
class Summary:
    """A codec's figures over all images it coded."""

    name: str
    images: int
    bits_per_subpixel: float
    bits_per_pixel: float
    median_encode_s: float
    median_decode_s: float
    peak_memory_mb: float | None

    @classmethod
    def of(cls, name: str, rows: Sequence[Measurement]) -> Summary:
        bits = 8 * sum(r.bytes for r in rows)
        peaks = [r.peak_bytes for r in rows if r.peak_bytes is not None]
        return cls(name, len(rows), bits / sum(r.subpixels for r in rows), bits / sum(r.pixels for r in rows),
                   statistics.median(r.encode_s for r in rows), statistics.median(r.decode_s for r in rows),
                   max(peaks) / 2**20 if peaks else None)


def run_metadata() -> dict[str, str]:
    """Date, machine, threads, torch version and commit, for every result file."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent).stdout.strip()
    return {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()} {platform.system()}",
            "cpu": platform.processor() or platform.machine(), "torch_threads": str(torch.get_num_threads()),
            "torch": torch.__version__, "commit": commit or "unknown"}


def write_json(codec: Codec, rows: Sequence[Measurement], folder: Path, meta: dict[str, str]) -> Path:
    """CompressAI's result format (one rate point: lossless), plus our per-image rows.

    ``python -m compressai.utils.plot -f *.json -m bpsp`` (or ``encoding_time``) plots it.
    """
    summary = Summary.of(codec.name, rows)
    document = {
        "name": codec.name,
        "description": codec.description,
        "meta": meta,
        "results": {
            "bpp": [summary.bits_per_pixel],
            "bpsp": [summary.bits_per_subpixel],
            "encoding_time": [summary.median_encode_s],
            "decoding_time": [summary.median_decode_s],
            "peak_memory_mb": [summary.peak_memory_mb],
        },
        "images": [asdict(r) for r in rows],
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{codec.name}.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def read_results(folder: Path, images: set[str], exclude: set[str]) -> dict[str, list[Measurement]]:
    """The per-image rows of every codec JSON in ``folder`` (by :func:`write_json`) that covers exactly
    ``images``, but for the codecs in ``exclude``: results of slow codecs reused, not re-measured."""
    kept = {}
    for path in sorted(folder.glob("*.json")):
        try:
            document = json.loads(path.read_text())
            rows = [Measurement(**row) for row in document["images"]]
        except (ValueError, KeyError, TypeError):
            continue  # not a codec result
        if document.get("name") not in exclude and {row.image for row in rows} == images:
            kept[document["name"]] = rows
    return kept


def markdown_table(summaries: Sequence[Summary], reference: str | None = "png") -> str:
    """Summaries as a Markdown table, best rate first, with each rate relative to ``reference``."""
    base = next((s.bits_per_subpixel for s in summaries if s.name == reference), None)
    lines = ["| codec | bits/subpixel | " + (f"vs {reference} | " if base else "") + "encode s | decode s | peak MB | images |",
             "|---|---:|" + ("---:|" if base else "") + "---:|---:|---:|---:|"]
    for s in sorted(summaries, key=lambda s: s.bits_per_subpixel):
        relative = f" {100 * (s.bits_per_subpixel / base - 1):+.1f} % |" if base else ""
        peak = f"{s.peak_memory_mb:.0f}" if s.peak_memory_mb is not None else "n/a"
        lines.append(f"| {s.name} | {s.bits_per_subpixel:.3f} |{relative} {s.median_encode_s:.3f} | "
                     f"{s.median_decode_s:.3f} | {peak} | {s.images} |")
    return "\n".join(lines)


def _pyplot():
    """matplotlib's pyplot on a file backend, or None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def plot(summaries: Sequence[Summary], folder: Path, title: str) -> list[Path]:
    """Bits per subpixel per codec, and rate against encode time; nothing without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return []
    ordered = sorted(summaries, key=lambda s: s.bits_per_subpixel, reverse=True)
    colour = ["tab:red" if s.name.endswith((AUTO, *METHODS)) else "tab:blue" for s in ordered]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(ordered) + 1.2))
    ax.barh([s.name for s in ordered], [s.bits_per_subpixel for s in ordered], color=colour)
    for y, s in enumerate(ordered):
        ax.text(s.bits_per_subpixel, y, f" {s.bits_per_subpixel:.3f}", va="center", fontsize=8)
    ax.set_xlabel("bits per subpixel (lower is better)")
    ax.set_title(title)
    rates_plot = _save(plt, fig, folder / "rates.png")

    fig, ax = plt.subplots(figsize=(7, 4.5))
    rates = [s.bits_per_subpixel for s in ordered]
    close = 0.02 * (max(rates) - min(rates))
    above = None  # the rate of the last label placed above its point
    for s, c in zip(ordered, colour):
        ax.scatter(s.median_encode_s, s.bits_per_subpixel, color=c)
        below = above is not None and above - s.bits_per_subpixel < close  # near-equal rates: stagger the labels
        ax.annotate(s.name, (s.median_encode_s, s.bits_per_subpixel), fontsize=7, xytext=(3, -9 if below else 3),
                    textcoords="offset points")
        above = None if below else s.bits_per_subpixel
    ax.set_xscale("log")
    ax.set_xlabel("median encode seconds per image (log)")
    ax.set_ylabel("bits per subpixel")
    ax.set_title(title)
    return [rates_plot, _save(plt, fig, folder / "rate-vs-time.png")]


def line_plot(path: Path, x: Sequence[float], series: dict[str, Sequence[float]], *, xlabel: str, ylabel: str,
              title: str) -> Path | None:
    """Curves against a log-scaled ``x``; None without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, values in series.items():
        ax.plot(x, values, marker="o", markersize=3, label=label, linestyle="--" if label.startswith("-ELBO") else "-")
    ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(plt, fig, path)


def _save(plt, fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def update_section(markdown: Path, name: str, body: str) -> None:
    """Replace the text between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` (appended if absent)."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{body.strip()}\n{end}"
    text = markdown.read_text() if markdown.exists() else ""
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = (text.rstrip("\n") + "\n\n" if text.strip() else "") + block + "\n"
    markdown.write_text(text)
