"""The Pillow plugin, used directly and through imageio and matplotlib."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import imageio.v3 as iio
import matplotlib.pyplot as plt
import numpy as np
import pytest
from fixtures.photos import crops
from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError

import bitswap_plugin as bsw
from bitswap_plugin.images import to_array

PHOTO = crops(1, 24, 30)[0]  # one patch per plane: the network runs for LA and RGBA
MODES = {"L": PHOTO[:, :, 1], "LA": PHOTO[:, :, 1:], "RGB": PHOTO, "RGBA": np.dstack([PHOTO, PHOTO[:, :, 0]])}


class CountingReader(io.BytesIO):
    """A file object that remembers how far it was read."""

    furthest = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.furthest = max(self.furthest, self.tell())
        return data


@pytest.fixture(scope="module")
def frames() -> list[Image.Image]:
    return [Image.fromarray(crop) for crop in crops(3, 24, 20, seed=2)]


def test_registered():
    assert Image.registered_extensions()[".bsw"] == "BSW"
    assert Image.MIME["BSW"] == "image/x-bsw"
    assert "BSW" in Image.SAVE and "BSW" in Image.SAVE_ALL


@pytest.mark.parametrize("mode", list(MODES))
def test_save_and_open(tmp_path, mode):
    path = tmp_path / "x.bsw"
    Image.fromarray(MODES[mode], mode).save(path)
    with Image.open(path) as image:
        assert (image.format, image.mode, image.size, image.n_frames) == ("BSW", mode, (30, 24), 1)
        assert image.get_format_mimetype() == "image/x-bsw"
        np.testing.assert_array_equal(np.asarray(image), MODES[mode])


def test_open_reads_only_the_header():
    data = bsw.compress(PHOTO)
    reader = CountingReader(data)
    with Image.open(reader) as image:
        assert image.size == (30, 24) and image.mode == "RGB"
        assert reader.furthest < 1024 < len(data)
        image.load()
    assert reader.furthest == len(data)


def test_save_options(tmp_path):
    Image.fromarray(MODES["L"]).save(tmp_path / "x.bsw", method="bbans", model="tiny-gray")
    with Image.open(tmp_path / "x.bsw") as image:
        assert image.info["method"] == "bbans"
        assert [name for name, _ in image.info["models"]] == ["tiny-gray"]
    with pytest.raises(bsw.ModelNotFoundError):
        Image.fromarray(PHOTO).save(tmp_path / "y.bsw", model="no-such-model")
    assert not (tmp_path / "y.bsw").exists()


def test_bilevel_and_palette_images_are_converted_losslessly(tmp_path):
    for image in (Image.fromarray(MODES["L"]).convert("1"), Image.fromarray(PHOTO).quantize(16)):
        image.save(tmp_path / "x.bsw")
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "x.bsw")), to_array(image))


@pytest.mark.parametrize("mode", ["I", "I;16", "F"])
def test_wide_modes_are_refused(tmp_path, mode):
    with pytest.raises(OSError, match=f"cannot write mode {mode} as BSW"):
        Image.new(mode, (8, 8)).save(tmp_path / "x.bsw")
    assert not (tmp_path / "x.bsw").exists()


def test_multi_frame_stack(tmp_path, frames):
    path = tmp_path / "stack.bsw"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    assert bsw.read_info(path.read_bytes()).shape == (3, 24, 20, 3)
    with Image.open(path) as image:
        assert image.n_frames == 3 and image.is_animated
        for index, frame in enumerate(ImageSequence.Iterator(image)):
            assert image.tell() == index
            np.testing.assert_array_equal(np.asarray(frame), np.asarray(frames[index]))
        image.seek(1)
        np.testing.assert_array_equal(np.asarray(image), np.asarray(frames[1]))
        with pytest.raises(EOFError):
            image.seek(3)
    with pytest.raises(ValueError, match="one size and mode"):
        frames[0].save(path, save_all=True, append_images=[frames[1].convert("L")])


def test_imageio_and_matplotlib(tmp_path, frames):
    iio.imwrite(tmp_path / "x.bsw", PHOTO)
    np.testing.assert_array_equal(iio.imread(tmp_path / "x.bsw"), PHOTO)
    np.testing.assert_array_equal(plt.imread(tmp_path / "x.bsw"), PHOTO)
    frames[0].save(tmp_path / "stack.bsw", save_all=True, append_images=frames[1:])
    np.testing.assert_array_equal(iio.imread(tmp_path / "stack.bsw", index=...), np.stack([np.asarray(f) for f in frames]))


def test_thumbnail_and_imageops(tmp_path):
    Image.fromarray(PHOTO).save(tmp_path / "x.bsw")
    with Image.open(tmp_path / "x.bsw") as image:
        image.thumbnail((15, 15))
        assert image.size == (15, 12)
    with Image.open(tmp_path / "x.bsw") as image:
        np.testing.assert_array_equal(np.asarray(ImageOps.mirror(image)), PHOTO[:, ::-1])
        assert ImageOps.grayscale(image).mode == "L"


def test_damaged_files_give_pillow_errors():
    data = bsw.compress(PHOTO, method="bitswap")
    for length in (0, 5, 12, 40, 80):
        with pytest.raises(UnidentifiedImageError):
            Image.open(io.BytesIO(data[:length]))
    with pytest.raises(UnidentifiedImageError, match="header checksum"):
        Image.open(io.BytesIO(data[:14] + bytes([data[14] ^ 1]) + data[15:]))
    damaged = bytearray(data)
    damaged[-20] ^= 0x10
    for broken, message in [(data[: len(data) // 2], "truncated"), (data + b"\0", "unexpected bytes"), (damaged, "corrupt")]:
        with Image.open(io.BytesIO(broken)) as image, pytest.raises(OSError, match=message):
            image.load()


def test_decompression_bomb_limits(tmp_path, frames, monkeypatch):
    frames[0].save(tmp_path / "stack.bsw", save_all=True, append_images=frames[1:])  # 3 frames of 20x24 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.warns(Image.DecompressionBombWarning):
        Image.open(tmp_path / "stack.bsw").close()
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 700)
    with pytest.raises(Image.DecompressionBombError):
        Image.open(tmp_path / "stack.bsw")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with Image.open(tmp_path / "stack.bsw") as image:
            assert image.n_frames == 3


def test_unrelated_files_are_not_claimed(tmp_path: Path):
    Image.fromarray(PHOTO).save(tmp_path / "x.png")
    with pytest.raises(UnidentifiedImageError):
        Image.open(tmp_path / "x.png", formats=["BSW"])
