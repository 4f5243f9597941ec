"""benchmarks/activity_offsets.py: the what-if for per-activity-class log-scale offsets still runs on the
package's models, and its rows keep the order that holds by construction."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "activity_offsets.py"
SAMPLE = Path(__file__).resolve().parents[1] / "bitswap_plugin" / "samples" / "astronaut.png"


@pytest.mark.parametrize("model", ["polyphase-rgb-l4-mix3-2", "polyphase-gray-l4-mix3-2"])
def test_offsets_fitted_on_every_patch_never_cost_more_than_none(tmp_path: Path, model: str):
    photos = tmp_path / "val"
    photos.mkdir()
    Image.open(SAMPLE).convert("RGB").crop((0, 0, 96, 64)).save(photos / "photo.png")
    ramp = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (64, 1))
    Image.fromarray(np.repeat(ramp[..., None], 3, 2)).save(photos / "ramp.png")
    out = tmp_path / "offsets.json"
    subprocess.run([sys.executable, str(SCRIPT), "--model", model, "--val-dir", str(photos), "--json", str(out)],
                   cwd=SCRIPT.parent, check=True, capture_output=True)
    result = json.loads(out.read_text())
    assert [row["image"] for row in result["images"]] == ["photo.png", "ramp.png"]
    for row in result["images"]:
        assert 0 < row["class, fitted on all"] <= row["none"] < 8  # the descent keeps only improvements
        assert row["step"] > 0 and row["class"] > 0
    assert result["summary"]["none"] > result["summary"]["class, fitted on all"]
