"""``bitswap bench``: run a benchmark, write its JSON, plots and Markdown table.

    bitswap bench codecs  [--images DIR] [--codecs NAME ...]   # every codec, CompressAI-style JSON
    bitswap bench blocks  [--images DIR]                       # the paper's 32x32-block table
    bitswap bench startup [--images DIR] [--blocks N]          # cumulative rate vs blocks coded
    bitswap bench sizes   [--images DIR] [--sizes 32 64 ...]   # overhead over -ELBO vs image size
    bitswap bench all --markdown benchmarks/RESULTS.md          # all four; refreshes that file

Results go to ``--out`` (default ``bench-results``); with ``--markdown FILE``
each benchmark also replaces its own section of that file (marked with
``<!-- bench:NAME -->`` comments), leaving the rest of the file alone.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from .. import zoo
from ..errors import InvalidOptionError
from . import codecs, experiments, measure

DEFAULT_IMAGES = Path("../shared/datasets/kodak")
PAPER_BLOCKS = {"bitswap": 3.51, "bbans": 3.62, "gzip": 5.96, "bzip2": 5.07, "lzma": 5.09, "png": 4.71, "webp": 3.66}
"""The paper's table: 100 ImageNet images cut into 32x32 blocks, bits per subpixel."""


def _meta_line(meta: dict[str, str]) -> str:
    return (f"_{meta['date']}, {meta['cpu']} ({meta['machine']}), {meta['torch_threads']} torch threads, "
            f"torch {meta['torch']}, commit {meta['commit']}._")


def _link(path: Path | None, markdown: Path | None, alt: str) -> str:
    if path is None or markdown is None:
        return ""
    return f"\n\n![{alt}]({Path(os.path.relpath(path, markdown.parent)).as_posix()})"


def _publish(args: argparse.Namespace, name: str, heading: str, body: str) -> None:
    """Print the section, write it as ``<out>/<name>.md`` and, with ``--markdown``, into that file."""
    print(body)
    section = f"{heading}\n\n{_meta_line(args.meta)}\n\n{body}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.md").write_text(section + "\n")
    if args.markdown:
        measure.update_section(args.markdown, name, section)


def _write(args: argparse.Namespace, name: str, document: dict) -> Path:
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{name}.json"
    path.write_text(json.dumps({"meta": args.meta, **document}, indent=2) + "\n")
    return path


def _chosen_codecs(args: argparse.Namespace) -> list[codecs.Codec]:
    """The codecs ``--codecs`` names (all by default); a name that matches none, or a codec that
    cannot code the images (a colour model with ``--gray``), is an error rather than a silent gap."""
    available = codecs.all_codecs(args.models, tuple(args.methods), args.device)
    unknown = [name for name in args.codecs or [] if not any(c.name.startswith(name) for c in available)]
    if unknown:
        raise InvalidOptionError(f"unknown codec {', '.join(map(repr, unknown))}: choose from {', '.join(c.name for c in available)}")
    chosen = list(codecs.select(available, args.codecs))
    channels = 1 if args.gray else 3
    unfit = [c.name for c in chosen if channels not in c.channels]
    if unfit and args.codecs:
        fit = ", ".join(c.name for c in available if channels in c.channels)
        what = "grey (--gray)" if args.gray else "colour"
        raise InvalidOptionError(f"{', '.join(unfit)} cannot code {what} images; choose from {fit}")
    return [c for c in chosen if channels in c.channels]


def _codecs(args: argparse.Namespace) -> None:
    paths = measure.image_paths(args.images, args.limit)
    chosen = _chosen_codecs(args)
    results = measure.run(chosen, paths, gray=args.gray)
    folder = args.out / ("codecs-gray" if args.gray else "codecs")
    by_name = {codec.name: codec for codec in chosen}
    for name, rows in results.items():
        measure.write_json(by_name[name], rows, folder, args.meta)
    kept = measure.read_results(folder, {p.name for p in paths}, exclude=set(results)) if args.keep else {}
    summaries = [measure.Summary.of(name, rows) for name, rows in {**results, **kept}.items()]
    title = f"{args.images.name} ({len(paths)} images{', grey' if args.gray else ''})"
    plots = measure.plot(summaries, folder, title)
    body = (f"{len(paths)} images of `{args.images.name}`{' converted to grey' if args.gray else ''}; every output decoded "
            "and checked equal to the input. Times are medians per image; peak MB is the most resident memory "
            "a codec added while coding one image."
            + (f" Kept from earlier runs on the same images (`--keep`): {', '.join(sorted(kept))}." if kept else "")
            + "\n\n" + measure.markdown_table(summaries)
            + "".join(_link(p, args.markdown, p.stem) for p in plots))
    _publish(args, "codecs-gray" if args.gray else "codecs", f"### Codecs on {title}", body)


def _blocks(args: argparse.Namespace) -> None:
    paths = measure.image_paths(args.images, args.limit)
    classical = [c for c in codecs.classical_codecs() if c.name in PAPER_BLOCKS]
    rates = experiments.block_table(paths, args.model, classical, tuple(args.methods))
    _write(args, "blocks", {"images": [p.name for p in paths], "model": args.model, "bpsp": rates, "paper_imagenet": PAPER_BLOCKS})
    lines = ["| codec | bits/subpixel here | paper (100 ImageNet images) |", "|---|---:|---:|"]
    for name, rate in rates.items():
        paper = PAPER_BLOCKS.get(name.removeprefix(f"{args.model}-"))
        lines.append(f"| {name} | {rate:.3f} | {paper if paper is not None else ''} |")
    body = (f"{len(paths)} images of `{args.images.name}`, cropped to multiples of 32. Bit-Swap and BB-ANS code all "
            "their 32x32 blocks as one chain (one stack of blocks, one file); the classical codecs code each "
            "cropped image whole, as in the paper.\n\n" + "\n".join(lines))
    _publish(args, "blocks", "### The paper's table: images as 32x32 blocks", body)


def _startup(args: argparse.Namespace) -> None:
    paths = measure.image_paths(args.images, args.limit)
    blocks = experiments.first_blocks(paths, args.blocks)
    total = len(blocks)
    counts = sorted({min(2**k, total) for k in range(total.bit_length() + 1)})
    curves = experiments.startup_curve(blocks[:total], args.model, counts, tuple(args.methods))
    _write(args, "startup", {"model": args.model, "images": [p.name for p in paths], "bpsp": curves})
    plot = measure.line_plot(args.out / "startup.png", counts, {k: v for k, v in curves.items() if k != "blocks"},
                             xlabel="blocks coded (32x32)", ylabel="cumulative bits per subpixel",
                             title=f"Start-up cost, {args.model}")
    lines = ["| blocks | " + " | ".join(k for k in curves if k != "blocks") + " |", "|---:|" + "---:|" * (len(curves) - 1)]
    for i, k in enumerate(counts):
        lines.append(f"| {k} | " + " | ".join(f"{curves[name][i]:.3f}" for name in curves if name != "blocks") + " |")
    body = (f"The first {total} blocks of `{args.images.name}` in raster order, coded as one chain; each row codes only "
            "the first k blocks and counts the whole ANS message (seed, tail, lane heads; no container header). "
            "The first block is the deflated seed.\n\n" + "\n".join(lines) + _link(plot, args.markdown, "start-up"))
    _publish(args, "startup", "### Start-up cost: cumulative rate against blocks coded", body)


def _sizes(args: argparse.Namespace) -> None:
    paths = measure.image_paths(args.images, args.limit)
    source = experiments.mosaic(paths, max(args.sizes))
    rows = experiments.size_sweep(source, args.sizes, args.model, tuple(args.methods))
    _write(args, "sizes", {"model": args.model, "images": [p.name for p in paths], "rows": rows})
    plot = measure.line_plot(args.out / "sizes.png", args.sizes, {m: [r[f"{m} overhead %"] for r in rows] for m in args.methods},
                             xlabel="image side (pixels)", ylabel="file size over -ELBO (%)", title=f"Overhead against size, {args.model}")
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---:|" * len(keys)]
    lines += ["| " + " | ".join(f"{r[k]:.3f}" if isinstance(r[k], float) else str(r[k]) for k in keys) + " |" for r in rows]
    body = (f"Centre crops of a mosaic of `{args.images.name}` images. Rates are whole files (header included) in bits per "
            "subpixel; the overhead is over the integer model's -ELBO of the same pixels.\n\n" + "\n".join(lines)
            + _link(plot, args.markdown, "overhead against size"))
    _publish(args, "sizes", "### Rate against image size", body)


def _all(args: argparse.Namespace) -> None:
    for run in (_codecs, _blocks, _startup, _sizes):
        run(args)


def build_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``bench`` subcommands to ``parser``."""
    sub = parser.add_subparsers(dest="benchmark", required=True)

    def add(name: str, help_text: str, run) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help=f"folder of images (default: {DEFAULT_IMAGES})")
        cmd.add_argument("--limit", type=int, default=None, help="only the first N images")
        cmd.add_argument("--methods", nargs="+", default=list(codecs.BENCH_METHODS), choices=codecs.BENCH_METHODS,
                         help="auto: the file compress writes; bitswap, bbans: the learned coder forced (default: all)")
        cmd.add_argument("--out", type=Path, default=Path("bench-results"), help="folder for JSON and plots")
        cmd.add_argument("--markdown", type=Path, default=None, help="Markdown file whose section to replace")
        cmd.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
        cmd.set_defaults(benchmark_run=run)
        return cmd

    commands = {name: add(name, help_text, run) for name, help_text, run in (
        ("codecs", "Bit-Swap against classical codecs (CompressAI-style JSON)", _codecs),
        ("blocks", "the paper's table: images as 32x32 blocks in one chain", _blocks),
        ("startup", "cumulative rate against the number of blocks coded", _startup),
        ("sizes", "overhead over -ELBO against image size", _sizes),
        ("all", "every benchmark above, with their defaults", _all))}
    for name in ("codecs", "all"):
        commands[name].add_argument("--codecs", nargs="+", default=None, help="only codecs whose names start with these")
        commands[name].add_argument("--models", nargs="+", default=None, help="Bit-Swap models (default: all installed)")
        commands[name].add_argument("--gray", action="store_true", help="code the images converted to grey")
        commands[name].add_argument("--device", default=None, help="device for Bit-Swap (cpu, cuda, auto)")
        commands[name].add_argument("--keep", action="store_true",
                                    help="also table the codecs whose results an earlier run left in --out for the same images")
    for name in ("blocks", "startup", "sizes", "all"):
        commands[name].add_argument("--model", default=zoo.DEFAULT_MODELS[3], help="Bit-Swap model (default: %(default)s)")
    for name in ("startup", "all"):
        commands[name].add_argument("--blocks", type=int, default=384, help="most blocks to code (default: one Kodak image)")
    for name in ("sizes", "all"):
        commands[name].add_argument("--sizes", nargs="+", type=int, default=[32, 64, 128, 256, 512, 1024, 2048])
    return parser


def run(args: argparse.Namespace) -> None:
    """Run the chosen benchmark (``args`` from :func:`build_parser`)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    args.meta = measure.run_metadata()
    args.benchmark_run(args)
