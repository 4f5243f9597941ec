"""The bitswap command, run as a user would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import bitswap_plugin as bsw
from bitswap_plugin import zoo


def bitswap(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bitswap_plugin.cli", *args], input=stdin, capture_output=True, timeout=300
    )


@pytest.fixture
def png(tmp_path: Path, photo: np.ndarray) -> Path:
    path = tmp_path / "photo.png"
    Image.fromarray(photo).save(path)
    return path


def test_compress_decompress_info(png: Path, photo: np.ndarray):
    done = bitswap("compress", str(png), "--method", "bitswap")
    assert done.returncode == 0, done.stderr
    bsw_path = png.with_suffix(".bsw")
    assert bsw.read_info(bsw_path.read_bytes()).shape == photo.shape
    assert b"bits/subpixel (bitswap)" in done.stderr

    out = png.parent / "restored.png"
    done = bitswap("decompress", str(bsw_path), "-o", str(out))
    assert done.returncode == 0, done.stderr
    np.testing.assert_array_equal(np.asarray(Image.open(out)), photo)

    done = bitswap("info", str(bsw_path))
    assert done.returncode == 0
    assert b"96x64 RGB" in done.stdout and zoo.DEFAULT_MODELS[3].encode() in done.stdout

    done = bitswap("compress", str(png), "-o", str(png.parent / "auto.bsw"))  # default: the smallest stream
    assert done.returncode == 0 and bsw.read_info((png.parent / "auto.bsw").read_bytes()).size <= bsw_path.stat().st_size
    done = bitswap("info", str(png.parent / "auto.bsw"))
    assert b"method " in done.stdout and b"96x64 RGB" in done.stdout


def test_pipes_and_options(png: Path, photo: np.ndarray):
    done = bitswap("compress", "-", "-o", "-", "--method", "bbans", "-q", stdin=png.read_bytes())
    assert done.returncode == 0 and done.stderr == b""
    assert bsw.read_info(done.stdout).method == "bbans"
    restored = bitswap("decompress", "-", "-o", "-", "-q", stdin=done.stdout)
    assert restored.returncode == 0
    np.testing.assert_array_equal(np.asarray(Image.open(__import__("io").BytesIO(restored.stdout))), photo)


def test_palette_and_bilevel_images_are_converted_losslessly(tmp_path: Path, photo: np.ndarray):
    palette = Image.fromarray(photo).quantize(16)
    path = tmp_path / "palette.png"
    palette.save(path)
    assert bitswap("compress", str(path), "-q").returncode == 0
    np.testing.assert_array_equal(bsw.decompress(path.with_suffix(".bsw").read_bytes()), np.asarray(palette.convert("RGB")))

    bilevel = Image.fromarray(photo[:, :, 0] > 128)
    path = tmp_path / "bilevel.png"
    bilevel.save(path)
    assert bitswap("compress", str(path), "-q").returncode == 0
    np.testing.assert_array_equal(bsw.decompress(path.with_suffix(".bsw").read_bytes()), np.asarray(bilevel.convert("L")))


@pytest.mark.parametrize(
    "args, message",
    [
        (["decompress", "missing.bsw"], b"No such file"),
        (["info", "garbage.bsw"], b"not a .bsw file"),
        (["decompress", "garbage.bsw"], b"not a .bsw file"),
        (["compress", "garbage.bsw"], b"garbage.bsw: cannot identify an image format"),
        (["compress", "real.bsw"], b"real.bsw is already a .bsw file: use bitswap decompress"),
        (["info", "cut.bsw"], b"truncated .bsw file"),
        (["decompress", "real.bsw", "-o", "out.jpg"], b"JPEG may lose pixels; write a lossless format"),
        (["decompress", "real.bsw", "-o", "out.gif"], b"--allow-lossy"),
        (["decompress", "real.bsw", "-o", "out.xyz"], b"no image format writes .xyz"),
        (["decompress", "real.bsw", "-o", "no-such-dir/out.png"], b"no-such-dir/out.png: No such file"),
        (["compress", "deep.png"], b"cannot store a I"),
    ],
)
def test_bad_input_gives_one_line_and_nonzero_exit(tmp_path: Path, args, message):
    (tmp_path / "garbage.bsw").write_bytes(b"hello world" * 10)
    real = bsw.compress(np.zeros((8, 8), np.uint8))
    (tmp_path / "real.bsw").write_bytes(real)
    (tmp_path / "cut.bsw").write_bytes(real[:-3])
    Image.fromarray(np.zeros((4, 4), np.uint16)).save(tmp_path / "deep.png")
    done = subprocess.run([sys.executable, "-m", "bitswap_plugin.cli", *args], cwd=tmp_path, capture_output=True, timeout=120)
    assert done.returncode == 1
    assert message in done.stderr
    assert done.stderr.count(b"\n") == 1 and b"Traceback" not in done.stderr


def test_failed_decompress_leaves_no_output(tmp_path: Path, png: Path):
    assert bitswap("compress", str(png), "-q").returncode == 0
    data = png.with_suffix(".bsw").read_bytes()
    broken = tmp_path / "broken.bsw"
    broken.write_bytes(data[:-5])
    target = tmp_path / "never.png"
    assert bitswap("decompress", str(broken), "-o", str(target)).returncode == 1
    assert not target.exists()
    assert not list(tmp_path.glob(".never.png.*"))


def test_decompress_writes_lossless_formats_and_says_what_it_wrote(tmp_path: Path, png: Path, photo: np.ndarray):
    assert bitswap("compress", str(png), "-q").returncode == 0
    for suffix in (".webp", ".tif", ".bmp", ".ppm"):
        out = tmp_path / f"restored{suffix}"
        done = bitswap("decompress", str(png.with_suffix(".bsw")), "-o", str(out))
        assert done.returncode == 0, done.stderr
        assert f"96x64 RGB -> {out}".encode() in done.stderr
        np.testing.assert_array_equal(np.asarray(Image.open(out).convert("RGB")), photo)
    lossy = tmp_path / "lossy.jpg"
    assert bitswap("decompress", str(png.with_suffix(".bsw")), "-o", str(lossy), "--allow-lossy", "-q").returncode == 0
    assert Image.open(lossy).format == "JPEG"


def test_console_script_is_installed():
    done = subprocess.run(["bitswap", "--help"], capture_output=True, timeout=60)
    assert done.returncode == 0 and b"compress" in done.stdout
