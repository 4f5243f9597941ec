"""Metadata kept: ICC profile, EXIF, XMP, DPI and text chunks through the API, the CLI and Pillow."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms, PngImagePlugin

import bitswap_plugin as bsw
from bitswap_plugin import container
from bitswap_plugin.cli import main as cli_main
from bitswap_plugin.errors import CorruptFileError, InvalidOptionError
from bitswap_plugin.fileformat import MAX_METADATA_BYTES

PIXELS = np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8)
ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _exif() -> Image.Exif:
    exif = Image.Exif()
    exif[0x0131] = "bitswap test"  # Software
    exif[0x8298] = "public domain"  # Copyright
    return exif


@pytest.fixture
def png_with_metadata(tmp_path: Path) -> Path:
    text = PngImagePlugin.PngInfo()
    text.add_text("Title", "a test image")
    text.add_itxt("Description", "grüße, 日本")
    path = tmp_path / "meta.png"
    Image.fromarray(PIXELS).save(path, icc_profile=ICC, exif=_exif(), dpi=(300, 150), pnginfo=text)
    return path


def _check_info(info: dict) -> None:
    assert info["icc_profile"] == ICC
    assert _exif_tags(info["exif"]) == {0x0131: "bitswap test", 0x8298: "public domain"}
    assert tuple(round(v) for v in info["dpi"]) == (300, 150)
    assert info["Title"] == "a test image" and info["Description"] == "grüße, 日本"


def _exif_tags(data: bytes) -> dict:
    exif = Image.Exif()
    exif.load(data)
    return dict(exif)


@pytest.mark.parametrize("method", ["auto", "bitswap", "webp", "raw"])
def test_api_stores_metadata_in_the_checksummed_header(method: str) -> None:
    metadata = {"icc_profile": ICC, "text:Title": "ä".encode(), "empty": b""}
    data = bsw.compress(PIXELS, method=method, metadata=metadata)
    assert bsw.read_info(data).metadata == metadata
    np.testing.assert_array_equal(bsw.decompress(data), PIXELS)
    at = data.index(ICC[40:60])
    with pytest.raises(CorruptFileError, match="header checksum"):
        bsw.read_info(data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :])


def test_metadata_limits_are_clear_errors() -> None:
    with pytest.raises(InvalidOptionError, match="exceed the limit of 1048576"):
        bsw.compress(PIXELS, metadata={"exif": bytes(MAX_METADATA_BYTES)})
    with pytest.raises(InvalidOptionError, match="map str names to bytes"):
        bsw.compress(PIXELS, metadata={"dpi": (72, 72)})
    header, start = container.read_header(bsw.compress(PIXELS, method="raw"))
    header.metadata = {"a": bytes(MAX_METADATA_BYTES)}
    with pytest.raises(CorruptFileError, match="more than 1048576 bytes of metadata"):
        container.read_header(container.pack(header, PIXELS.tobytes()))


def test_pillow_keeps_metadata(png_with_metadata: Path, tmp_path: Path) -> None:
    with Image.open(png_with_metadata) as image:
        image.save(tmp_path / "meta.bsw")
    with Image.open(tmp_path / "meta.bsw") as image:
        _check_info(image.info)
        np.testing.assert_array_equal(np.asarray(image), PIXELS)
    Image.fromarray(PIXELS).save(tmp_path / "options.bsw", icc_profile=ICC, dpi=(72, 96))
    with Image.open(tmp_path / "options.bsw") as image:
        assert image.info["icc_profile"] == ICC and image.info["dpi"] == (72.0, 96.0)


def test_cli_keeps_metadata(png_with_metadata: Path, tmp_path: Path) -> None:
    assert cli_main(["compress", str(png_with_metadata), "-o", str(tmp_path / "m.bsw"), "-q"]) == 0
    assert set(bsw.read_info((tmp_path / "m.bsw").read_bytes()).metadata) >= {"icc_profile", "exif", "dpi", "text:Title"}
    for suffix in (".png", ".tif", ".webp"):
        out = tmp_path / f"back{suffix}"
        assert cli_main(["decompress", str(tmp_path / "m.bsw"), "-o", str(out), "-q"]) == 0
        with Image.open(out) as image:
            np.testing.assert_array_equal(np.asarray(image), PIXELS)
            assert image.info["icc_profile"] == ICC, suffix
            if suffix == ".png":
                _check_info(image.info)
            if suffix == ".webp":
                assert _exif_tags(image.info["exif"])[0x0131] == "bitswap test"


def test_cli_info_lists_metadata(png_with_metadata: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cli_main(["compress", str(png_with_metadata), "-o", str(tmp_path / "m.bsw"), "-q"])
    cli_main(["info", str(tmp_path / "m.bsw")])
    assert "metadata icc_profile, exif" in capsys.readouterr().out


def test_cli_sleeps_idle_threads_unless_told_otherwise(tmp_path: Path) -> None:
    """The CLI sets OMP_WAIT_POLICY before torch loads (a busy machine: benchmarks/bench_speed.py --busy)."""
    script = "import os, sys; from bitswap_plugin.cli import main; main(sys.argv[1:]); print(os.environ['OMP_WAIT_POLICY'])"
    Image.fromarray(PIXELS).save(tmp_path / "p.png")
    for env, expected in (({}, "PASSIVE"), ({"OMP_WAIT_POLICY": "ACTIVE"}, "ACTIVE")):
        done = subprocess.run([sys.executable, "-c", script, "compress", str(tmp_path / "p.png"), "-q"],
                              env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True, timeout=120)
        assert done.stdout.strip() == expected, done.stderr


def test_hostile_metadata_cannot_break_decompress(tmp_path: Path) -> None:
    metadata = {"dpi": b"nan,nan", "text:dpi": b"oops", "text:exif": b"not exif", "icc_profile": ICC}
    (tmp_path / "h.bsw").write_bytes(bsw.compress(PIXELS, method="raw", metadata=metadata))
    for suffix in (".png", ".tif", ".webp"):
        assert cli_main(["decompress", str(tmp_path / "h.bsw"), "-o", str(tmp_path / f"h{suffix}"), "-q"]) == 0
        with Image.open(tmp_path / f"h{suffix}") as image:
            np.testing.assert_array_equal(np.asarray(image), PIXELS)
            assert image.info["icc_profile"] == ICC
            assert not isinstance(image.info.get("exif"), bytes)  # a text chunk named exif stays text (PNG) or is left out
    with Image.open(tmp_path / "h.bsw") as image:
        assert "dpi" not in image.info and image.info["icc_profile"] == ICC
    (tmp_path / "x.bsw").write_bytes(bsw.compress(PIXELS, method="raw", metadata={"exif": b"garbage"}))
    assert cli_main(["decompress", str(tmp_path / "x.bsw"), "-o", str(tmp_path / "x.tif"), "-q"]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "x.tif")), PIXELS)


def test_metadata_names_must_be_text() -> None:
    with pytest.raises(InvalidOptionError, match="valid Unicode"):
        bsw.compress(PIXELS, metadata={"\ud800": b"1"})


def test_oversized_text_is_dropped_with_a_warning_not_the_image(tmp_path: Path) -> None:
    text = PngImagePlugin.PngInfo()
    text.add_text("workflow", "x" * 700_000)
    text.add_text("prompt", "y" * 600_000)
    Image.fromarray(PIXELS).save(tmp_path / "big.png", pnginfo=text, icc_profile=ICC)
    with pytest.warns(UserWarning, match="'text:workflow' .* dropped"):
        assert cli_main(["compress", str(tmp_path / "big.png"), "-q"]) == 0
    kept = bsw.read_info((tmp_path / "big.bsw").read_bytes()).metadata
    assert kept["icc_profile"] == ICC and "text:prompt" in kept and "text:workflow" not in kept


def test_tiff_resolution_and_bsw_text_survive(tmp_path: Path, png_with_metadata: Path) -> None:
    Image.fromarray(PIXELS).save(tmp_path / "r.tif", dpi=(300, 300))
    assert cli_main(["compress", str(tmp_path / "r.tif"), "-q"]) == 0
    assert bsw.read_info((tmp_path / "r.bsw").read_bytes()).metadata["dpi"] == b"300.0,300.0"
    with Image.open(png_with_metadata) as image:
        image.save(tmp_path / "a.bsw")
    with Image.open(tmp_path / "a.bsw") as image:  # a .bsw saved again keeps its text
        image.save(tmp_path / "b.bsw")
    with Image.open(tmp_path / "b.bsw") as image:
        _check_info(image.info)
