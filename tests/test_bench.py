"""``bitswap bench`` and the paper's experiments, run for real on a tiny input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bitswap_plugin import cli
from bitswap_plugin.bench import codecs, experiments, measure
from conftest import kodak_image


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """A folder of two small photos (4 and 6 patches)."""
    folder = tmp_path_factory.mktemp("images")
    Image.fromarray(kodak_image(23, (64, 64))).save(folder / "a.png")
    Image.fromarray(kodak_image(7, (96, 64))).save(folder / "b.png")
    return folder


@pytest.mark.parametrize("codec", codecs.classical_codecs(), ids=lambda c: c.name)
def test_every_classical_codec_is_lossless_on_every_mode_it_claims(codec: codecs.Codec, photo: np.ndarray):
    gray = photo.mean(axis=2).astype(np.uint8)
    for image in (gray, np.dstack([gray, 255 - gray]), photo, np.dstack([photo, gray])):
        if codec.codes(image):
            data = codec.encode(image)
            assert len(data) > 0
            np.testing.assert_array_equal(codec.decode(data, image.shape), image)


def test_all_the_codecs_the_issue_names_are_there():
    names = {codec.name for codec in codecs.all_codecs(["tiny-rgb"])}
    assert {"tiny-rgb-bitswap", "tiny-rgb-bbans", "gzip", "bzip2", "lzma", "png", "qoi", "webp",
            "jpeg2000", "jpegls", "jpegxl-e7", "jpegxl-e9"} <= names


def test_bench_codecs_writes_compressai_json_a_table_and_plots(images: Path, tmp_path: Path):
    markdown = tmp_path / "RESULTS.md"
    markdown.write_text("# Results\n\nKept as written.\n")
    argv = ["bench", "codecs", "--images", str(images), "--models", "tiny-rgb", "--methods", "bitswap",
            "--codecs", "tiny", "png", "gzip", "--out", str(tmp_path / "out"), "--markdown", str(markdown)]
    assert cli.main(argv) == 0
    folder = tmp_path / "out" / "codecs"
    documents = {p.stem: json.loads(p.read_text()) for p in folder.glob("*.json")}
    assert set(documents) == {"tiny-rgb-bitswap", "png", "gzip"}
    for name, document in documents.items():
        assert document["name"] == name and document["description"]
        assert {"bpp", "bpsp", "encoding_time", "decoding_time"} <= set(document["results"])
        rows = document["images"]
        assert [r["image"] for r in rows] == ["a.png", "b.png"]
        bits = 8 * sum(r["bytes"] for r in rows)
        assert document["results"]["bpsp"] == [pytest.approx(bits / sum(r["subpixels"] for r in rows))]
        assert document["results"]["bpp"] == [pytest.approx(3 * document["results"]["bpsp"][0])]
        if sys.platform.startswith("linux"):  # where the peak is measured: each image's, not only the first's
            assert all(r["peak_bytes"] > 0 for r in rows), (name, rows)
    png = next(c for c in codecs.classical_codecs() if c.name == "png")
    assert documents["png"]["images"][0]["bytes"] == len(png.encode(measure.load_image(images / "a.png")))
    assert (folder / "rates.png").stat().st_size > 0 and (folder / "rate-vs-time.png").stat().st_size > 0

    assert cli.main(argv) == 0  # a rerun replaces its section and keeps the rest
    text = markdown.read_text()
    assert text.startswith("# Results\n\nKept as written.\n")
    assert text.count("<!-- bench:codecs -->") == 1 and text.count("| tiny-rgb-bitswap |") == 1
    assert "](out/codecs/rates.png)" in text


def test_bench_refuses_a_missing_folder(tmp_path: Path, capsys):
    assert cli.main(["bench", "codecs", "--images", str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 1
    assert "nowhere is not a folder of images" in capsys.readouterr().err


def test_bench_writes_its_table_without_being_asked(tmp_path: Path):
    Image.fromarray(np.arange(48 * 40 * 3, dtype=np.uint8).reshape(48, 40, 3)).save(tmp_path / "a.png")
    assert cli.main(["bench", "codecs", "--images", str(tmp_path), "--out", str(tmp_path / "out"), "--codecs", "png", "gzip"]) == 0
    table = (tmp_path / "out" / "codecs.md").read_text()
    assert "| png |" in table and "| gzip |" in table


def test_bench_keeps_earlier_results_for_the_same_images(tmp_path: Path):
    """--keep tables codecs an earlier run measured on the same images; other image sets are left out."""
    Image.fromarray(np.arange(48 * 40 * 3, dtype=np.uint8).reshape(48, 40, 3)).save(tmp_path / "a.png")
    out = str(tmp_path / "out")
    assert cli.main(["bench", "codecs", "--images", str(tmp_path), "--out", out, "--codecs", "png", "gzip"]) == 0
    assert cli.main(["bench", "codecs", "--images", str(tmp_path), "--out", out, "--codecs", "bzip2", "--keep"]) == 0
    table = (tmp_path / "out" / "codecs.md").read_text()
    assert "| png |" in table and "| gzip |" in table and "| bzip2 |" in table and "earlier runs on the same images (`--keep`): gzip, png" in table
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "b.png")  # now another image set
    assert cli.main(["bench", "codecs", "--images", str(tmp_path), "--out", out, "--codecs", "lzma", "--keep"]) == 0
    table = (tmp_path / "out" / "codecs.md").read_text()
    assert "| lzma |" in table and "| png |" not in table


@pytest.mark.parametrize("extra, message", [
    (["--codecs", "nosuchcodec"], "unknown codec 'nosuchcodec': choose from"),
    (["--codecs", "bitswap-rgb", "png", "--gray"], "bitswap-rgb-bitswap, bitswap-rgb-bbans cannot code grey (--gray) images"),
])
def test_bench_refuses_codecs_it_would_drop(tmp_path: Path, capsys, extra, message):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    assert cli.main(["bench", "codecs", "--images", str(tmp_path), "--out", str(tmp_path), *extra]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_blocks_cover_the_cropped_image_in_raster_order():
    image = np.arange(70 * 100 * 3, dtype=np.uint32).reshape(70, 100, 3)
    blocks = experiments.cut_blocks(experiments.crop_to_blocks(image))
    assert blocks.shape == (2 * 3, 32, 32, 3)
    np.testing.assert_array_equal(blocks[4], image[32:64, 32:64])


def test_block_table_codes_the_blocks_as_one_chain(images: Path):
    classical = [c for c in codecs.classical_codecs() if c.name in ("png", "gzip")]
    rates = experiments.block_table(sorted(images.glob("*.png")), "tiny-rgb", classical, ("bitswap",))
    assert set(rates) == {"-ELBO", "tiny-rgb-bitswap", "png", "gzip"}
    assert 0 < rates["-ELBO"] < 8 and 0 < rates["tiny-rgb-bitswap"] < 8


def test_startup_bbans_pays_more_than_bitswap_for_its_first_blocks(images: Path):
    blocks = experiments.first_blocks(sorted(images.glob("*.png")), 8)
    assert len(blocks) == 8
    curves = experiments.startup_curve(blocks, "tiny-rgb", [1, 2, 4, 8])
    assert curves["bitswap"][0] == curves["bbans"][0]  # one block is the seed alone
    assert all(b > s for b, s in zip(curves["bbans"][1:], curves["bitswap"][1:]))
    assert curves["bitswap"][-1] < curves["bitswap"][1]  # the start-up cost is paid off


def test_size_sweep_overhead_shrinks_with_size(images: Path):
    source = experiments.mosaic(sorted(images.glob("*.png")), 96)
    assert source.shape == (96, 96, 3)
    rows = experiments.size_sweep(source, [32, 96], "tiny-rgb", ("bitswap",))
    assert [r["size"] for r in rows] == [32, 96]
    assert rows[1]["bitswap overhead %"] < rows[0]["bitswap overhead %"]


def test_compressai_plots_our_json(images: Path, tmp_path: Path):
    """CompressAI is an optional extra (numpy<2); where it is installed, its plotter reads our files."""
    pytest.importorskip("compressai")
    assert cli.main(["bench", "codecs", "--images", str(images), "--codecs", "png", "gzip", "--out", str(tmp_path)]) == 0
    files = sorted(str(p) for p in (tmp_path / "codecs").glob("*.json"))
    done = subprocess.run([sys.executable, "-m", "compressai.utils.plot", "-f", *files, "-m", "bpsp",
                           "-o", str(tmp_path / "plot.png")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "plot.png").stat().st_size > 0
