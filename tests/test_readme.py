"""The README's Python examples run as written (the API's, and each library's section, as scripts in a temp dir)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
CHAPTER = "## Using it from other libraries"
SECTIONS = ["numcodecs", "Zarr format 2", "Zarr format 3", "Pillow", "imageio and matplotlib", "dask"]


def examples() -> dict[str, str]:
    """Section title -> its python code blocks, joined, for the ``###`` sections of the chapter."""
    chapter = README.read_text().split(CHAPTER, 1)[1].split("\n## ", 1)[0]
    sections = re.split(r"^### (.+)$", chapter, flags=re.MULTILINE)[1:]
    return {
        title.strip(): "\n".join(re.findall(r"^```python\n(.*?)^```$", body, flags=re.MULTILINE | re.DOTALL))
        for title, body in zip(sections[::2], sections[1::2])
    }


def test_every_library_has_an_example():
    found = examples()
    assert list(found) == SECTIONS
    assert all(found.values())


def api_example() -> str:
    """The code blocks of the README's "Python API" chapter."""
    chapter = README.read_text().split("## Python API", 1)[1].split("\n## ", 1)[0]
    return "\n".join(re.findall(r"^```python\n(.*?)^```$", chapter, flags=re.MULTILINE | re.DOTALL))


def _run(code: str, folder: Path) -> None:
    script = folder / "example.py"
    script.write_text(code)
    done = subprocess.run([sys.executable, str(script)], cwd=folder, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("section", SECTIONS)
def test_example_runs(section, tmp_path):
    _run(examples()[section], tmp_path)


def test_api_example_runs(tmp_path):
    assert "bsw.compress" in api_example()
    _run(api_example(), tmp_path)
