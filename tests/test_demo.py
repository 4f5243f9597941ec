"""The demo scripts run end to end, as the README's Quick start runs them, and write only under out/ or where told."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

DEMOS = Path(__file__).resolve().parents[1] / "entry_points"


def _demo(script: str, *args: str, cwd: Path) -> str:
    done = subprocess.run([sys.executable, DEMOS / script, *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _files(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


def test_demo_compress_then_decompress(tmp_path: Path, photo: np.ndarray):
    source = tmp_path / "photo.tiff"
    Image.fromarray(photo).save(source)
    work = tmp_path / "work"
    work.mkdir()
    printed = _demo("demo_compress.py", str(source), cwd=work)
    for codec in ("Bit-Swap", "gzip", "bzip2", "LZMA", "PNG", "WebP"):
        assert codec in printed
    printed = _demo("demo_decompress.py", "out/photo.bsw", "--reference", str(source), "-o", "restored/photo.png", cwd=work)
    assert "identical" in printed and "True" in printed
    assert _files(work) == {"out", "out/photo.bsw", "restored", "restored/photo.png"}
    np.testing.assert_array_equal(np.asarray(Image.open(work / "restored" / "photo.png")), photo)


def test_quick_start_writes_under_out(tmp_path: Path):
    _demo("demo_compress.py", cwd=tmp_path)
    printed = _demo("demo_decompress.py", cwd=tmp_path)
    assert "identical" in printed and "True" in printed
    assert _files(tmp_path) == {"out", "out/astronaut.bsw", "out/astronaut.png"}
