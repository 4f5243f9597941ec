"""Shared fixtures: real images, cut small so the suite stays fast."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
KODAK = DATASETS / "kodak"


def kodak_image(index: int = 23, size: tuple[int, int] | None = None) -> np.ndarray:
    """A Kodak photo (benchmark only: never used to train or tune), optionally downscaled."""
    path = KODAK / f"kodim{index:02d}.png"
    if not path.exists():
        pytest.skip(f"{path} is not available")
    with Image.open(path) as image:
        image = image.convert("RGB")
        if size is not None:
            image = image.resize(size, Image.Resampling.LANCZOS)
        return np.asarray(image)


@pytest.fixture
def photo() -> np.ndarray:
    """A 96x64 RGB photo."""
    return kodak_image(23, (96, 64))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20190609)


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread while a module runs threads or processes of its own: on busy cores, torch's
    spinning intra-op workers make oversubscribed work several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
