"""benchmarks/pack_training_data.py: what a lent GPU machine gets to train on."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "pack_training_data.py"


def test_the_pack_holds_every_validation_photo_and_training_photos_within_the_budget(tmp_path: Path):
    data = tmp_path / "photos-large"
    rng = np.random.default_rng(0)
    for dataset in ("a", "b"):
        (data / dataset).mkdir(parents=True)
        for i in range(6):
            noise = rng.integers(0, 256, (24 + 8 * i, 24, 3), dtype=np.uint8)
            Image.fromarray(noise).save(data / dataset / f"{dataset}-{i}.webp", lossless=True)
    (data / "val.txt").write_text("a/a-0.webp\nb/b-5.webp\n")
    sizes = {f"{p.parent.name}/{p.name}": p.stat().st_size for p in data.glob("*/*.webp")}
    budget = sizes["a/a-0.webp"] + sizes["b/b-5.webp"] + sum(sorted(sizes.values())[-4:])  # room for some, not all
    out = tmp_path / "packed"
    run = subprocess.run([sys.executable, str(SCRIPT), "--data", str(data), "--out", str(out), "--budget-mib", str(budget / 2**20)],
                         capture_output=True, text=True, check=True)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["val"] == ["a/a-0.webp", "b/b-5.webp"]
    assert 4 <= len(manifest["train"]) < 10 and not set(manifest["train"]) & set(manifest["val"])
    assert sum(sizes[name] for name in manifest["train"] + manifest["val"]) <= budget
    for folder in ("train", "val"):
        for name in manifest[folder]:  # byte-identical copies, named <dataset>-<file>
            assert (out / folder / name.replace("/", "-")).read_bytes() == (data / name).read_bytes()
    assert sorted(p.name for p in (out / "train").iterdir()) == sorted(n.replace("/", "-") for n in manifest["train"])
    assert f"{len(manifest['train'])} training and 2 validation photos" in run.stdout
