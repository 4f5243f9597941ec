"""The README's Python examples run as written (the API's, and each library's section, as scripts in a temp dir)."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

README = Path(__file__).resolve().parents[1] / "README.md"
PYPROJECT = README.parent / "pyproject.toml"
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


# the extra the README tells each section's readers to install (the Pillow section needs none)
EXTRAS = {"numcodecs": "ecosystem", "Zarr format 2": "ecosystem", "Zarr format 3": "ecosystem", "Pillow": None, "dask": "dask"}


def _project() -> dict:
    """pyproject.toml's ``[project]`` table."""
    return pytest.importorskip("tomllib").loads(PYPROJECT.read_text())["project"]


def _installed_by(extra: str | None) -> set[str]:
    """Distributions ``pip install ".[extra]"`` installs (the base dependencies with None), following extras of itself."""
    project = _project()
    requirements = project["dependencies"] + ([] if extra is None else project["optional-dependencies"][extra])
    names = set()
    for requirement in map(Requirement, requirements):
        if requirement.name == project["name"]:
            names |= set().union(*map(_installed_by, requirement.extras))
        else:
            names.add(canonicalize_name(requirement.name))
    return names


def test_readme_names_extras_that_install_what_its_examples_import():
    text = README.read_text()
    assert 'pip install "bitswap-plugin' not in text  # not on PyPI: extras install from the clone
    assert set(re.findall(r'pip install (?:-e )?"\.\[(\w+)\]"', text)) <= set(_project()["optional-dependencies"])
    distributions = packages_distributions()
    for section, extra in EXTRAS.items():
        modules = set(re.findall(r"^(?:import|from) (\w+)", examples()[section], flags=re.MULTILINE))
        needed = {canonicalize_name(distributions[m][0]) for m in modules - set(sys.stdlib_module_names) - {"bitswap_plugin"}}
        assert needed <= _installed_by(None) | _installed_by(extra), section
        if extra:
            assert f'pip install ".[{extra}]"' in text
