"""The demo scripts run end to end, as the README's main command runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

DEMOS = Path(__file__).resolve().parents[1] / "entry_points"


def test_demo_compress_then_decompress(tmp_path: Path, photo: np.ndarray):
    source = tmp_path / "photo.tiff"
    Image.fromarray(photo).save(source)
    done = subprocess.run([sys.executable, DEMOS / "demo_compress.py", str(source)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    for codec in ("Bit-Swap", "gzip", "bzip2", "LZMA", "PNG", "WebP"):
        assert codec in done.stdout
    encoded = tmp_path / "photo.bsw"
    assert encoded.exists()
    done = subprocess.run(
        [sys.executable, DEMOS / "demo_decompress.py", str(encoded), "--reference", str(source)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "identical" in done.stdout and "True" in done.stdout
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "photo.png")), photo)
