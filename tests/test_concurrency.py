"""Threads and processes coding at once: no corruption, no deadlock, one model however many threads race its load,
and a process forked after coding codes too.

The workloads are those of ``benchmarks/stress.py`` at CI size (tiny models,
small images, a few rounds). Each runs under a deadline, so a deadlock fails
the test instead of hanging it; the stores are read back here, afresh.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from bitswap_plugin import zoo
from bitswap_plugin.zoo import load_model_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import stress

pytestmark = pytest.mark.usefixtures("one_torch_thread")

THREADS = 16


def _stored(path: Path) -> np.ndarray:
    return zarr.open_array(path, mode="r")[...]


def _chunks(versions: list[int]) -> np.ndarray:
    return np.stack([stress.chunk_image(chunk, version) for chunk, version in enumerate(versions)])


def test_threads_racing_the_first_load_share_one_model(monkeypatch):
    monkeypatch.setattr(zoo, "_loaded", {})  # as in a fresh process: nothing loaded yet
    report = stress.Report("load race")
    got = stress.load_race(stress.model_names("tiny"), THREADS, 120, report)
    assert report.failures == []
    for name, models in got.items():
        assert len(models) == THREADS and all(model is zoo.load_model(name) for model in models)
    assert sorted(zoo._loaded) == [("tiny-gray", "cpu"), ("tiny-rgb", "cpu")]


def test_registering_a_name_again_replaces_the_loaded_model(monkeypatch, tmp_path):
    """Else the zoo would code with the old model while streams name the new file's hash: undecodable elsewhere."""
    monkeypatch.setattr(zoo, "_registry", {})
    monkeypatch.setattr(zoo, "_loaded", {})
    shipped = zoo.available_models()
    first, second = (Path(shutil.copy(shipped[name], tmp_path / f"{name}.safetensors")) for name in ("tiny-gray", "bitswap-gray"))
    zoo.register_model(first, "mine")
    assert zoo.load_model("mine").content_hash == load_model_file(first).content_hash
    zoo.register_model(second, "mine")
    assert zoo.load_model("mine").content_hash == load_model_file(second).content_hash
    assert zoo.model_hash("mine") == zoo.file_hash(second)


def test_threads_round_trip_through_the_api_and_zarr_at_once(tmp_path):
    """16 threads, 2 rounds: streams equal the one-thread streams, pixels come back, each thread's chunk holds its last write."""
    rounds = 2
    report = stress.thread_stress(tmp_path, THREADS, rounds, "tiny", timeout=240)
    assert report.failures == []
    assert report.counts == {"api": THREADS * rounds, "zarr v3": THREADS * rounds, "zarr v2": THREADS * rounds}
    expected = _chunks([rounds] * THREADS + [0] * stress.SHARED_CHUNKS)
    for fmt in (3, 2):
        np.testing.assert_array_equal(_stored(tmp_path / f"threads-v{fmt}.zarr"), expected)


def test_processes_write_disjoint_chunks_of_one_store(tmp_path):
    """4 fresh processes, each racing 4 threads to load the models, then coding and writing its own chunks."""
    processes, rounds, threads = 4, 2, 4
    report = stress.process_stress(tmp_path, processes, rounds, threads, "tiny", timeout=300)
    assert report.failures == []
    chunks = processes * stress.CHUNKS_PER_PROCESS
    assert report.counts == {"model loads": processes * threads * 2, "api": processes * rounds,
                             "zarr v3": chunks * rounds, "zarr v2": chunks * rounds}
    for fmt in (3, 2):
        np.testing.assert_array_equal(_stored(tmp_path / f"processes-v{fmt}.zarr"), _chunks([rounds] * chunks))


FORKED_AFTER_CODING = """
import multiprocessing, sys
import numpy as np, torch
from PIL import Image
import bitswap_plugin as bsw

torch.set_num_threads(2)
image = np.pad(np.asarray(Image.open(sys.argv[1]).convert("RGB")), ((0, 128), (0, 128), (0, 0)), "reflect")  # 144 patches: auto estimates first
data = bsw.compress(image)


def child(_):
    again = bsw.compress(image)
    return again == data, np.array_equal(bsw.decompress(data), image)


with multiprocessing.get_context("fork").Pool(1) as pool:
    print(pool.map_async(child, [0]).get(timeout=60))
"""


def test_a_process_forked_after_coding_on_two_threads_codes_too():
    """multiprocessing's default on Linux forks; GNU OpenMP hangs a child whose parent thread led a team."""
    sample = Path(__file__).resolve().parents[1] / "bitswap_plugin" / "samples" / "astronaut.png"
    run = subprocess.run([sys.executable, "-c", FORKED_AFTER_CODING, str(sample)], capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "[(True, True)]"
