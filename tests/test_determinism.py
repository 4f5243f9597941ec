"""Files decode bit-exactly on other CPU code paths, thread counts and batch sizes."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from conftest import kodak_image

ENCODE = """
import sys, numpy as np, torch, bitswap_plugin as bsw
torch.set_num_threads(2)
image = np.load(sys.argv[1])
open(sys.argv[2], "wb").write(bsw.compress(image, method=sys.argv[3]))
"""

DECODE = """
import sys, numpy as np, torch, bitswap_plugin as bsw
torch.set_num_threads(1)
np.save(sys.argv[2], bsw.decompress(open(sys.argv[1], "rb").read(), batch_size=3))
"""


def _run(code: str, *args: str, env: dict[str, str] | None = None) -> None:
    subprocess.run([sys.executable, "-c", code, *args], check=True, env={**os.environ, **(env or {})}, timeout=600)


def test_decode_on_baseline_isa_single_thread_other_batch(tmp_path: Path):
    image = kodak_image(7, (112, 80))
    source = tmp_path / "image.npy"
    np.save(source, image)
    for method in ("bitswap", "bbans"):
        encoded = tmp_path / f"{method}.bsw"
        _run(ENCODE, str(source), str(encoded), method)
        decoded = tmp_path / f"{method}.npy"
        _run(DECODE, str(encoded), str(decoded), env={"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "OMP_NUM_THREADS": "1"})
        np.testing.assert_array_equal(np.load(decoded), image)


def test_encoding_is_identical_across_isa_and_threads(tmp_path: Path):
    image = kodak_image(3, (80, 64))
    source = tmp_path / "image.npy"
    np.save(source, image)
    digests = set()
    for env in ({}, {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "OMP_NUM_THREADS": "1"}):
        target = tmp_path / "out.bsw"
        _run(ENCODE, str(source), str(target), "bitswap", env=env)
        digests.add(hashlib.sha256(target.read_bytes()).hexdigest())
    assert len(digests) == 1



BATCHES_ON_THREADS = """
import sys, numpy as np, torch, bitswap_plugin as bsw
image, data = np.load(sys.argv[1]), open(sys.argv[2], "rb").read()
torch.set_num_threads(2)
print("decodes:", np.array_equal(bsw.decompress(data, batch_size=2), image))  # network batches side by side, one thread each
"""


def test_network_batches_on_threads_decode_alike(tmp_path: Path):
    image = kodak_image(11, (96, 64))
    source, encoded = tmp_path / "image.npy", tmp_path / "image.bsw"
    np.save(source, image)
    _run(ENCODE, str(source), str(encoded), "bitswap")
    run = subprocess.run([sys.executable, "-c", BATCHES_ON_THREADS, str(source), str(encoded)], capture_output=True, text=True,
                         timeout=600, check=True)
    assert "decodes: True" in run.stdout
