"""benchmarks/gpu_check.py on the CPU: reference files, every check, and a failure reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fixtures.photos import crops
from PIL import Image

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
CHECKS = ("cpu_file_decodes_on_device", "device_file_equals_cpu_file", "device_file_decodes_on_cpu")


@pytest.fixture
def gpu_check(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import gpu_check

    return gpu_check


def test_gpu_check_on_the_cpu(tmp_path, gpu_check):
    Image.fromarray(crops(1, 32, 64, seed=4)[0]).save(tmp_path / "photo.png")  # two patches: the network runs
    common = ["--images", str(tmp_path / "photo.png"), "--tiled-side", "32"]
    assert gpu_check.main([*common, "--make-cpu-files", str(tmp_path / "cpu")]) == 0
    assert sorted(path.name for path in (tmp_path / "cpu").iterdir()) == ["photo-gray.bsw", "photo.bsw", "tiled.bsw"]

    assert gpu_check.main([*common, "--cpu-files", str(tmp_path / "cpu"), "--device", "cpu", "--out", str(tmp_path / "check.json")]) == 0
    results = json.loads((tmp_path / "check.json").read_text())
    assert results["device"] == "cpu"
    assert [row["image"] for row in results["checks"]] == ["photo", "photo-gray", "tiled"]
    assert all(row[check] is True for row in results["checks"] for check in CHECKS)


def test_gpu_check_reports_a_wrong_reference(tmp_path, gpu_check, capsys):
    Image.fromarray(crops(1, 16, 16, seed=5)[0]).save(tmp_path / "photo.png")  # one patch: quick, no network
    common = ["--images", str(tmp_path / "photo.png"), "--tiled-side", "0"]
    assert gpu_check.main([*common, "--make-cpu-files", str(tmp_path / "cpu")]) == 0
    (tmp_path / "cpu" / "photo.bsw").write_bytes((tmp_path / "cpu" / "photo-gray.bsw").read_bytes())
    assert gpu_check.main([*common, "--cpu-files", str(tmp_path / "cpu"), "--device", "cpu"]) == 1
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [(row["image"], row["cpu_file_decodes_on_device"], row["device_file_equals_cpu_file"]) for row in rows] == [
        ("photo", False, False), ("photo-gray", True, True)]
