"""The ``bitswap`` command: compress, decompress and inspect ``.bsw`` files."""

from __future__ import annotations

import argparse
import functools
import io
import os
import secrets
import sys
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from . import api
from .errors import BitSwapError, CorruptFileError, InvalidImageError, InvalidOptionError, TruncatedFileError
from .fileformat import AUTO, CODING_METHODS, MAGIC
from .images import from_array, metadata_of, save_options, to_array

LOSSLESS_OUTPUTS = {
    "PNG": {},
    "TIFF": {"compression": "tiff_adobe_deflate"},
    "WEBP": {"lossless": True, "quality": 100, "exact": True},
    "BMP": {},
    "PPM": {},
}
"""Formats ``decompress`` writes, with the options that keep every pixel (WebP: lossless mode)."""


def _read_input(path: str) -> bytes:
    return sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()


def _write_output(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, or to stdout for ``-``.

    The bytes go to ``.NAME.RANDOM.part`` beside the target, are fsynced, then
    renamed over it, so the path holds the old file or the complete new one.
    The temp file is named and created inside the ``try`` (an interrupt cannot
    slip in between and leak it; only SIGKILL or a crash leaves one) and gets
    the umask's permissions, as a plain ``open`` would, not ``mkstemp``'s 0600.
    """
    if path == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    target = Path(path)
    temp = target.parent / f".{target.name}.{secrets.token_hex(8)}.part"
    try:
        with open(temp, "xb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, target)
    except OSError as exc:  # name the user's path, not the hidden temp file
        temp.unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror, path) from None
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _progress_bar(args: argparse.Namespace, desc: str) -> tqdm:
    """Patches coded out of all of them, with the time left; shown only on a terminal, only for
    work over a second. Feed it with :func:`_advance`."""
    return tqdm(desc=desc, unit="patch", delay=1.0, disable=args.quiet or not sys.stderr.isatty(), leave=False)


def _advance(bar: tqdm, done: int, total: int) -> None:
    """An :data:`api.Progress` callback: the coder knows the total (the planes it codes, not the image's)."""
    bar.total = total
    bar.update(done - bar.n)


def _name(path: str) -> str:
    return "standard input" if path == "-" else path


def _default_output(source: str, suffix: str) -> str:
    if source == "-":
        return "-"
    return str(Path(source).with_suffix(suffix))


def _compress(args: argparse.Namespace) -> None:
    source = _read_input(args.input)
    if source.startswith(MAGIC):
        raise InvalidImageError(f"{_name(args.input)} is already a .bsw file: use bitswap decompress")
    try:
        with Image.open(io.BytesIO(source)) as image:
            array, metadata = to_array(image), metadata_of(image)
    except UnidentifiedImageError:
        raise InvalidImageError(f"{_name(args.input)}: cannot identify an image format Pillow reads") from None
    with _progress_bar(args, "compress") as bar:
        data = api.compress(array, model=args.model, method=args.method, device=args.device, progress=functools.partial(_advance, bar),
                            metadata=metadata)
    _write_output(args.output or _default_output(args.input, ".bsw"), data)
    if not args.quiet and (args.output or args.input) != "-":
        info = api.read_info(data)
        print(f"{args.input}: {len(data)} bytes, {info.bits_per_subpixel:.3f} bits/subpixel ({info.method})", file=sys.stderr)


def _output_format(output: str, allow_lossy: bool) -> tuple[str, dict]:
    """(Pillow format, save options) for ``output``: a lossless format, or with ``allow_lossy`` any Pillow writes."""
    if output == "-":
        return "PNG", {}
    suffix = Path(output).suffix.lower()
    fmt = Image.registered_extensions().get(suffix)
    if fmt in LOSSLESS_OUTPUTS:
        return fmt, LOSSLESS_OUTPUTS[fmt]
    lossless = ", ".join(ext for ext, name in sorted(Image.registered_extensions().items()) if name in LOSSLESS_OUTPUTS)
    if fmt is None or fmt not in Image.SAVE:
        raise InvalidOptionError(f"{output}: no image format writes {suffix or 'files without an extension'} (lossless: {lossless})")
    if not allow_lossy:
        raise InvalidOptionError(f"{output}: {fmt} may lose pixels; write a lossless format ({lossless}) or pass --allow-lossy")
    return fmt, {}


def _decompress(args: argparse.Namespace) -> None:
    output = args.output or _default_output(args.input, ".png")
    fmt, options = _output_format(output, args.allow_lossy)
    data = _read_input(args.input)
    info = api.read_info(data)
    with _progress_bar(args, "decompress") as bar:
        array = api.decompress(data, device=args.device, progress=functools.partial(_advance, bar))
    image, buffer = from_array(array), io.BytesIO()
    try:
        image.save(buffer, format=fmt, **options, **save_options(info.metadata, fmt))
    except (ValueError, TypeError, OverflowError, SyntaxError, OSError) as exc:  # metadata the writer refuses
        print(f"bitswap: warning: {_name(args.input)}: metadata not written to {output} ({exc})", file=sys.stderr)
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, **options)
    _write_output(output, buffer.getvalue())
    if not args.quiet and output != "-":
        print(f"{_name(args.input)}: {info.width}x{info.height} {info.mode} -> {output} ({fmt})", file=sys.stderr)


def _info(args: argparse.Namespace) -> None:
    data = _read_input(args.input)
    info = api.read_info(data)
    if len(data) < info.size:
        raise TruncatedFileError(f"truncated .bsw file: {len(data)} bytes, the header promises {info.size}")
    if len(data) > info.size:
        raise CorruptFileError(f"corrupt .bsw file: {len(data) - info.size} unexpected bytes after the payload")
    models = ", ".join(f"{name} ({digest[:12]})" for name, digest in info.models) or "none"
    coded = f" (coded as {info.coded_mode})" if info.coded_mode != info.mode else ""
    metadata = f", metadata {', '.join(ascii(key)[1:-1] for key in info.metadata)}" if info.metadata else ""
    print(f"{args.input}: {info.width}x{info.height} {info.mode}{coded}, method {info.method}, models {models}{metadata}, "
          f"{info.size} bytes, {info.bits_per_subpixel:.3f} bits/subpixel")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bitswap", description="Lossless image compression with Bit-Swap.")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str, default_suffix: str | None):
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("input", help="input file, or - for standard input")
        if default_suffix:
            cmd.add_argument("-o", "--output", help=f"output file, or - for standard output (default: input with {default_suffix})")
            cmd.add_argument("--device", default=None, help="cpu, cuda, cuda:N or auto (default: $BITSWAP_DEVICE, else cpu)")
            cmd.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
        return cmd

    compress = add("compress", "compress an image (PNG, JPEG, ... any Pillow can read) to .bsw", ".bsw")
    compress.add_argument("--model", default=None, help="model name (default: the bundled model for the image's channels)")
    compress.add_argument("--method", default=AUTO, choices=(AUTO, *CODING_METHODS),
                          help="auto (default): the smallest of Bit-Swap and the classical methods; or force one")
    compress.set_defaults(run=_compress)
    decompress = add("decompress", "decompress a .bsw file (to PNG unless -o names another lossless format)", ".png")
    decompress.add_argument("--allow-lossy", action="store_true", help="let -o name a lossy format (JPEG, GIF, ...)")
    decompress.set_defaults(run=_decompress)
    add("info", "print what a .bsw header says", None).set_defaults(run=_info)
    # train and bench parse their own arguments, so that other commands never import them
    sub.add_parser("train", help="train, quantize and export a model (see bitswap train -h)", add_help=False).set_defaults(run=_train)
    sub.add_parser("bench", help="benchmarks: Bit-Swap against other codecs, the paper's experiments (see bitswap bench -h)",
                   add_help=False).set_defaults(run=_bench)
    return parser


def _train(args: argparse.Namespace) -> None:
    from . import train

    train.run(train.build_parser().parse_args(args.rest))


def _bench(args: argparse.Namespace) -> None:
    from .bench import command

    parser = argparse.ArgumentParser(prog="bitswap bench", description=command.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    command.run(command.build_parser(parser).parse_args(args.rest))


def main(argv: list[str] | None = None) -> int:
    # OpenMP threads that spin between the coder's many small steps starve each other on a busy
    # machine (3-10x slower on 2 loaded cores, bench_speed.py --only busy); set before torch loads
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    args, args.rest = parser.parse_known_args(argv)
    if args.rest and args.run not in (_train, _bench):
        parser.error(f"unrecognized arguments: {' '.join(args.rest)}")
    try:
        args.run(args)
    except (BitSwapError, UnidentifiedImageError, OSError) as exc:
        message = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        target = f"{exc.filename}: " if isinstance(exc, OSError) and exc.filename else ""
        print(f"bitswap: error: {target}{message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bitswap: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
