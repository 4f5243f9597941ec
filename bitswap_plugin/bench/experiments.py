"""The Bit-Swap paper's experiments, on this project's models and data.

* :func:`block_table` — images cut into 32x32 blocks and coded as one chain
  with Bit-Swap and BB-ANS, beside classical codecs on the whole images (the
  paper's table on 100 ImageNet images);
* :func:`startup_curve` — cumulative bits per subpixel against the number of
  blocks coded, beside the model's -ELBO: the start-up cost of bits-back coding;
* :func:`size_sweep` — the file's overhead over the -ELBO for square images
  from 32x32 up.

The -ELBO is the integer model's own (one latent sample per patch, every term
an exact ANS cost), so "overhead" is what the coder adds, not model error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .. import api
from ..fileformat import METHODS, PATCH
from .codecs import Codec
from .measure import load_image, measure


def crop_to_blocks(image: np.ndarray) -> np.ndarray:
    """The top-left part of an image whose sides are multiples of 32 (what the paper's demo kept)."""
    return image[: image.shape[0] // PATCH * PATCH, : image.shape[1] // PATCH * PATCH]


def cut_blocks(image: np.ndarray) -> np.ndarray:
    """An (H, W, C) image with sides multiples of 32 cut into (n, 32, 32, C) blocks, in raster order."""
    rows, cols = image.shape[0] // PATCH, image.shape[1] // PATCH
    grid = image.reshape(rows, PATCH, cols, PATCH, -1)
    return grid.transpose(0, 2, 1, 3, 4).reshape(rows * cols, PATCH, PATCH, -1)


def first_blocks(paths: Sequence[Path], count: int) -> np.ndarray:
    """The first ``count`` 32x32 blocks of the images, image after image (fewer if they run out)."""
    blocks, total = [], 0
    for path in paths:
        if total >= count:
            break
        blocks.append(cut_blocks(crop_to_blocks(load_image(path))))
        total += len(blocks[-1])
    return np.concatenate(blocks)[:count]


def block_table(paths: Sequence[Path], model: str, classical: Sequence[Codec],
                methods: Sequence[str] = METHODS) -> dict[str, float]:
    """Bits per subpixel: Bit-Swap and BB-ANS on all images' 32x32 blocks as one chain, the
    model's -ELBO on them, and each classical codec on the same cropped images, whole."""
    images = [crop_to_blocks(load_image(path)) for path in paths]
    blocks = np.concatenate([cut_blocks(image) for image in images])
    subpixels = blocks.size
    rates = {"-ELBO": api.neg_elbo_bits(blocks, model=model) / subpixels}
    for method in methods:
        data = api.compress(blocks, model=model, method=method)
        if not np.array_equal(api.decompress(data), blocks):
            raise AssertionError(f"{method} did not reproduce the blocks exactly")
        rates[f"{model}-{method}"] = 8 * len(data) / subpixels
    for codec in classical:
        sizes = [measure(codec, path.name, image).bytes for path, image in zip(paths, images) if codec.codes(image)]
        if len(sizes) == len(images):
            rates[codec.name] = 8 * sum(sizes) / subpixels
    return rates


def startup_curve(blocks: np.ndarray, model: str, counts: Sequence[int], methods: Sequence[str] = METHODS,
                  report: Callable[[str], None] = print) -> dict[str, list[float]]:
    """Cumulative bits per subpixel after the first k blocks, for each k in ``counts``:
    each method's message (the first k blocks coded as a chain) and the -ELBO."""
    per_block = blocks[0].size
    curves: dict[str, list[float]] = {"blocks": list(counts), "-ELBO": [], **{method: [] for method in methods}}
    elbo, done = 0.0, 0
    for k in counts:
        elbo += api.neg_elbo_bits(blocks[done:k], model=model) if k > done else 0.0
        done = max(done, k)
        curves["-ELBO"].append(elbo / (k * per_block))
        for method in methods:
            curves[method].append(api.message_bits(blocks[:k], model=model, method=method) / (k * per_block))
        report(f"{k} blocks: " + ", ".join(f"{name} {curves[name][-1]:.3f}" for name in ["-ELBO", *methods]))
    return curves


def mosaic(paths: Sequence[Path], size: int) -> np.ndarray:
    """A size x size RGB image tiled from photos (each turned landscape and cut to a common size)."""
    photos = [load_image(path) for path in paths]
    photos = [np.rot90(p) if p.shape[0] > p.shape[1] else p for p in photos]
    height, width = min(p.shape[0] for p in photos), min(p.shape[1] for p in photos)
    rows, cols = -(-size // height), -(-size // width)
    tiles = [photos[i % len(photos)][:height, :width, :3] for i in range(rows * cols)]
    grid = np.concatenate([np.concatenate(tiles[r * cols : (r + 1) * cols], axis=1) for r in range(rows)])
    return np.ascontiguousarray(grid[:size, :size])


def size_sweep(source: np.ndarray, sizes: Sequence[int], model: str, methods: Sequence[str] = METHODS,
               report: Callable[[str], None] = print) -> list[dict[str, float]]:
    """File bits per subpixel and overhead over the -ELBO for centre crops of ``source``."""
    rows = []
    for size in sizes:
        top, left = (source.shape[0] - size) // 2, (source.shape[1] - size) // 2
        image = np.ascontiguousarray(source[top : top + size, left : left + size])
        elbo = api.neg_elbo_bits(image, model=model) / image.size
        row = {"size": size, "-ELBO": elbo}
        for method in methods:
            data = api.compress(image, model=model, method=method)
            if not np.array_equal(api.decompress(data), image):
                raise AssertionError(f"{method} did not reproduce the {size}x{size} crop exactly")
            row[method] = 8 * len(data) / image.size
            row[f"{method} overhead %"] = 100 * (row[method] / elbo - 1)
        rows.append(row)
        report(", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
    return rows
