"""A set of non-photographic images, drawn on the fly: where a photo-trained model is weakest.

Screenshots, text, palette images, charts, masks, label images, flat areas and
pixel art are everyday inputs of Pillow and Zarr users. ``bitswap bench`` and
``benchmarks/bench_graphics.py`` compare the codecs on them. Everything is drawn
with Pillow and (for charts) matplotlib's Agg backend from fixed seeds, so the set
needs no files; the palette image is the bundled sample reduced to 53 colours.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "astronaut.png"
_TEXT = "The quick brown fox jumps over the lazy dog. 0123456789 (lossless) [bits-back] {ANS}"


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size)


def text_screenshot() -> np.ndarray:
    """Black text on white, 512x256 RGB: a terminal or document screenshot."""
    image = Image.new("RGB", (512, 256), "white")
    draw = ImageDraw.Draw(image)
    for line in range(14):
        draw.text((6, 4 + 18 * line), _TEXT[line % 7 :], fill="black", font=_font(13))
    return np.asarray(image)


def user_interface() -> np.ndarray:
    """A window with a title bar, a sidebar, buttons and labels, 640x400 RGB."""
    rng = np.random.default_rng(1)
    image = Image.new("RGB", (640, 400), (236, 236, 236))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, 639, 28), fill=(45, 52, 64))
    draw.text((10, 6), "bitswap - results.bsw", fill="white", font=_font(14))
    draw.rectangle((0, 29, 150, 399), fill=(250, 250, 250))
    for row in range(12):
        draw.text((12, 40 + 28 * row), f"Item {row + 1:02d}", fill=(30, 30, 30), font=_font(13))
    for i in range(6):
        x, y = 180 + 150 * (i % 3), 60 + 70 * (i // 3)
        colour = tuple(int(c) for c in rng.integers(40, 200, 3))
        draw.rounded_rectangle((x, y, x + 130, y + 40), 8, fill=colour)
        draw.text((x + 14, y + 12), f"Button {i}", fill="white", font=_font(14))
    draw.rectangle((180, 220, 610, 380), outline=(150, 150, 150), fill="white")
    for line in range(7):
        draw.text((190, 228 + 21 * line), _TEXT[: 40 + line], fill=(60, 60, 60), font=_font(12))
    return np.asarray(image)


def palette_image() -> np.ndarray:
    """The bundled sample at 256x256 reduced to 53 dithered colours, as a GIF would hold it (RGB)."""
    with Image.open(SAMPLE) as im:
        return np.asarray(im.convert("RGB").resize((256, 256), Image.LANCZOS).quantize(53).convert("RGB"))


def _figure(draw: Callable) -> np.ndarray:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.8), dpi=100)
    canvas = FigureCanvasAgg(figure)
    draw(figure.add_subplot())
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def line_chart() -> np.ndarray:
    """A matplotlib line chart with a legend and grid, 640x480 RGB."""
    x = np.linspace(0, 10, 200)

    def draw(axes) -> None:
        for k in range(3):
            axes.plot(x, np.sin(x + k) * np.exp(-x / (5 + k)), label=f"series {k}")
        axes.set(title="Validation -ELBO", xlabel="step", ylabel="bits/subpixel")
        axes.grid(True)
        axes.legend()

    return _figure(draw)


def bar_chart() -> np.ndarray:
    """A matplotlib bar chart with labels, 640x480 RGB."""

    def draw(axes) -> None:
        names = ["PNG", "WebP", "JPEG-XL", "bzip2", "Bit-Swap"]
        axes.bar(names, [4.47, 3.17, 2.90, 3.86, 3.83], color=["C0", "C1", "C2", "C3", "C4"])
        axes.set(title="Kodak", ylabel="bits/subpixel")

    return _figure(draw)


def heatmap() -> np.ndarray:
    """A smooth field shown with a colour map and a colour bar, 640x480 RGB."""
    y, x = np.mgrid[-3:3:60j, -3:3:80j]

    def draw(axes) -> None:
        shown = axes.imshow(np.exp(-(x**2 + y**2) / 4) * np.cos(2 * x), cmap="viridis", interpolation="nearest")
        axes.figure.colorbar(shown)

    return _figure(draw)


def mask() -> np.ndarray:
    """A binary segmentation mask of ellipses, 512x512 L (0 and 255)."""
    rng = np.random.default_rng(2)
    image = Image.new("L", (512, 512), 0)
    draw = ImageDraw.Draw(image)
    for _ in range(25):
        x, y = rng.integers(0, 512, 2)
        rx, ry = rng.integers(8, 60, 2)
        draw.ellipse((x - rx, y - ry, x + rx, y + ry), fill=255)
    return np.asarray(image)


def label_image() -> np.ndarray:
    """Nearest-seed regions numbered 0-11 (a label image from segmentation), 256x256 L."""
    rng = np.random.default_rng(3)
    seeds = rng.uniform(0, 256, (12, 2))
    y, x = np.mgrid[0:256, 0:256]
    distance = (y[..., None] - seeds[:, 0]) ** 2 + (x[..., None] - seeds[:, 1]) ** 2
    return distance.argmin(axis=2).astype(np.uint8)


def scanned_page() -> np.ndarray:
    """Text on slightly noisy off-white paper, saved as RGB with equal channels (a scan), 512x384."""
    rng = np.random.default_rng(4)
    image = Image.new("L", (512, 384), 0)
    draw = ImageDraw.Draw(image)
    for line in range(18):
        draw.text((20, 10 + 20 * line), _TEXT[line % 11 :], fill=200, font=_font(14))
    paper = 238 + rng.normal(0, 2, (384, 512))
    page = np.clip(np.rint(paper - np.asarray(image)), 0, 255).astype(np.uint8)
    return np.repeat(page[..., None], 3, axis=2)


def pixel_art() -> np.ndarray:
    """A 16x16 sprite of 6 colours scaled 16x with nearest neighbours, 256x256 RGB."""
    rng = np.random.default_rng(5)
    palette = rng.integers(0, 256, (6, 3), dtype=np.uint8)
    sprite = palette[rng.integers(0, 6, (16, 16))]
    return sprite.repeat(16, axis=0).repeat(16, axis=1)


def flat() -> np.ndarray:
    """One mid-grey colour, 256x256 RGB."""
    return np.full((256, 256, 3), (128, 128, 128), np.uint8)


def gradient() -> np.ndarray:
    """A smooth 2-D colour gradient, 256x256 RGB."""
    y, x = np.mgrid[0:256, 0:256]
    return np.stack([x, y, (x + y) // 2], axis=2).astype(np.uint8)


def logo() -> np.ndarray:
    """Shapes and text on a transparent background, 256x256 RGBA."""
    image = Image.new("RGBA", (256, 256), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.ellipse((20, 20, 236, 236), fill=(200, 40, 40, 255), outline=(90, 10, 10, 255), width=6)
    draw.polygon([(128, 50), (200, 190), (56, 190)], fill=(250, 220, 60, 220))
    draw.text((80, 200), "bitswap", fill=(255, 255, 255, 255), font=_font(22))
    return np.asarray(image)


GRAPHICS: dict[str, Callable[[], np.ndarray]] = {
    "text-screenshot": text_screenshot,
    "user-interface": user_interface,
    "palette-53": palette_image,
    "line-chart": line_chart,
    "bar-chart": bar_chart,
    "heatmap": heatmap,
    "mask": mask,
    "labels": label_image,
    "scanned-page": scanned_page,
    "pixel-art": pixel_art,
    "flat": flat,
    "gradient": gradient,
    "logo-rgba": logo,
}
"""Each image of the set by name, drawn when called."""
