"""Interrupted writers never leave data that looks valid but is not.

``bitswap compress`` killed (SIGKILL) or interrupted (SIGINT) at any moment
leaves at its output path the old file (or none) or the complete new one;
after SIGINT no ``.part`` file is left, after SIGKILL only ``.NAME.RANDOM.part``
may be. A Zarr v3 or v2 writer killed mid-chunk leaves every chunk readable as
its old or its new content, and a chunk cut short fails to decode.

The writers are real processes forked from a server that has already imported
torch and zarr (a fresh interpreter per trial would spend seconds on imports):
``cli.main`` for the command, a loop of chunk writes for Zarr. To land a signal
mid-write without a hook in the package, a trial freezes the writer (SIGSTOP)
as soon as its output directory changes, or after a random delay, and inspects
the files while it is frozen: that is what a SIGKILL at that instant would
leave. Then it kills the writer, or sends SIGINT and SIGCONT. Set
``BITSWAP_INTERRUPT_TRIALS`` for more trials; run with ``-s`` to see the tally.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import os
import re
import signal
import stat
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from PIL import Image

import bitswap_plugin as bsw
from bitswap_plugin import cli
from bitswap_plugin.errors import BitSwapError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import stress

pytestmark = [
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc to see a process stop"),
    pytest.mark.usefixtures("one_torch_thread"),
]

TRIALS = int(os.environ.get("BITSWAP_INTERRUPT_TRIALS", "4"))
VERSIONS = 3
"""The Zarr writer cycles each chunk through these versions of :func:`stress.chunk_image`."""


def _freeze(pid: int) -> None:
    """SIGSTOP ``pid`` and wait until it has stopped (or ended)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGSTOP)
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return
        if state in "TtZX":
            return
        time.sleep(0.0005)


def _signal(pid: int, *signals: signal.Signals) -> None:
    for sig in signals:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _compress(argv: list[str], stderr: str) -> None:
    """Run the command in a forked process, its stderr to a file."""
    torch.set_num_threads(1)
    # as in a command started from a shell: tqdm's lock then is no named semaphore for a SIGKILL to leak
    multiprocessing.set_start_method("fork", force=True)
    with open(stderr, "wb") as err:
        os.dup2(err.fileno(), 2)
    status = cli.main(argv)
    # the command is over: a SIGINT now would interrupt this harness's process teardown, not the command
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    sys.exit(status)


def _classify(path: Path, old: bytes | None, new: bytes) -> str:
    """'absent', 'old' or 'new' (exactly those bytes: coding is deterministic), else 'INVALID'."""
    if not path.exists():
        return "absent"
    return {old: "old", new: "new"}.get(path.read_bytes(), "INVALID")


def _snapshot(folder: Path) -> list[tuple] | None:
    """The folder's entries with inode, size and mtime; None if one vanished while looked at (a change too)."""
    try:
        return sorted((entry.name, entry.inode(), entry.stat().st_size, entry.stat().st_mtime_ns) for entry in os.scandir(folder))
    except FileNotFoundError:
        return None


@pytest.fixture(scope="module")
def forkserver():
    context = stress.forkserver()
    warm = context.Process(target=int)  # start the server now, not inside a timed run
    warm.start()
    warm.join()
    return context


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> tuple[Path, bytes, bytes]:
    """A PNG to compress (two patches, so the network runs), its .bsw, and another image's .bsw as the old output."""
    picture = stress.image((32, 64, 3), 7)
    png = tmp_path_factory.mktemp("input") / "photo.png"
    Image.fromarray(picture).save(png)
    new = bsw.compress(picture, model="tiny-rgb")
    np.testing.assert_array_equal(bsw.decompress(new), picture)
    return png, new, bsw.compress(stress.image((32, 64, 3), 8), model="tiny-rgb")


def _cli_trial(forkserver, folder: Path, images, old: bool, sig: signal.Signals, delay: float | None) -> dict:
    """One compress into ``folder``, frozen at the first change there (``delay`` None) or ``delay`` s after it
    began, then sent ``sig``. What the output path held while frozen and at the end, whether a reader that had the
    old file open still read the old bytes (never rewritten in place), exit status, leftovers, stderr."""
    png, new_bytes, old_bytes = images
    folder.mkdir()
    target, stderr = folder / "out.bsw", folder.with_suffix(".stderr")
    if old:
        target.write_bytes(old_bytes)
    before = _snapshot(folder)
    argv = ["compress", str(png), "-o", str(target), "--model", "tiny-rgb", "-q"]
    process = forkserver.Process(target=_compress, args=(argv, str(stderr)))
    with open(target if old else os.devnull, "rb") as reader:  # a reader of the old file, open all along
        process.start()
        while process.is_alive() and not stderr.exists():  # the command has begun (a signal before is not its business)
            time.sleep(0.0005)
        began = time.perf_counter()
        if delay is None:
            while process.is_alive() and _snapshot(folder) == before:
                time.sleep(0.0005)
        else:
            process.join(delay)
        _freeze(process.pid)
        seconds = time.perf_counter() - began
        frozen = _classify(target, old_bytes if old else None, new_bytes)
        part_seen = any(name.endswith(".part") for name in os.listdir(folder))
        _signal(process.pid, sig, signal.SIGCONT)
        process.join(120)
        assert not process.is_alive(), "the interrupted command did not end"
        reader_kept_old = reader.read() == (old_bytes if old else b"")
    return {
        "frozen": frozen,
        "final": _classify(target, old_bytes if old else None, new_bytes),
        "reader_kept_old": reader_kept_old,
        "part_seen": part_seen,
        "leftovers": sorted(set(os.listdir(folder)) - {target.name}),
        "exitcode": process.exitcode,
        "stderr": stderr.read_bytes(),
        "seconds": seconds,
    }


@pytest.fixture(scope="module")
def full_run(forkserver, tmp_path_factory, images) -> tuple[dict, Path]:
    """One compress over an old file, never interrupted: its trial result and its folder."""
    folder = tmp_path_factory.mktemp("full") / "run"
    return _cli_trial(forkserver, folder, images, old=True, sig=signal.SIGCONT, delay=300), folder


def test_an_uninterrupted_compress_writes_a_valid_file_with_the_umask_permissions(full_run):
    result, folder = full_run
    assert (result["final"], result["exitcode"], result["leftovers"], result["stderr"]) == ("new", 0, [], b"")
    assert result["reader_kept_old"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((folder / "out.bsw").stat().st_mode) == 0o666 & ~umask


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_an_interrupted_compress_leaves_the_old_file_or_the_complete_new_one(forkserver, tmp_path, images, full_run, sig):
    """Half the trials freeze at the first change in the output folder, half at a random moment of a full run."""
    duration = full_run[0]["seconds"]
    rng = np.random.default_rng(int(sig))
    tally = Counter()
    for trial in range(TRIALS):
        old = trial % 4 < 2
        delay = None if trial % 2 else rng.uniform(0, duration)
        result = _cli_trial(forkserver, tmp_path / f"trial{trial}", images, old, sig, delay)
        before = "old" if old else "absent"
        assert result["frozen"] in (before, "new") and result["final"] in (result["frozen"], "new"), result
        assert result["reader_kept_old"], result
        if sig == signal.SIGKILL:
            assert result["exitcode"] in (0, -signal.SIGKILL)
            assert all(re.fullmatch(r"\.out\.bsw\.[0-9a-f]{16}\.part", name) for name in result["leftovers"]), result
        else:
            assert result["leftovers"] == [], result
            assert (result["exitcode"], result["stderr"]) in ((0, b""), (130, b"bitswap: interrupted\n")), result
        trigger = "at random" if delay is not None else "on write"
        tally[sig.name, trigger, f"{result['frozen']}->{result['final']}", "part seen" if result["part_seen"] else ""] += 1
    print(f"\n{sig.name} trials ({duration:.2f} s per run):", dict(tally))


def _write_chunks(path: str, chunks: int) -> None:
    """Rewrite every chunk, cycling through the versions, until killed."""
    torch.set_num_threads(1)
    array = zarr.open_array(path, mode="r+")
    for version in itertools.count(1):
        for chunk in range(chunks):
            array[chunk] = stress.chunk_image(chunk, version % VERSIONS)


def _check_chunks(path: Path, chunks: int) -> None:
    """Every chunk decodes (reading raises on any damaged one) to one of its versions."""
    stored = zarr.open_array(path, mode="r")[...]
    for chunk in range(chunks):
        assert any(np.array_equal(stored[chunk], stress.chunk_image(chunk, v)) for v in range(VERSIONS)), chunk


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_a_killed_zarr_writer_leaves_every_chunk_old_or_new(forkserver, tmp_path, zarr_format):
    """Freeze the writer at random moments and check the store, ``10 * TRIALS`` times, then SIGKILL it and check again."""
    chunks, path = 6, tmp_path / "a.zarr"
    stress.create_array(path, chunks, zarr_format, "tiny")
    before = sorted(path.rglob("*"))
    writer = forkserver.Process(target=_write_chunks, args=(str(path), chunks))
    writer.start()
    rng = np.random.default_rng(zarr_format)
    partial = 0
    try:
        deadline = time.monotonic() + 120
        while sorted(path.rglob("*")) == before and time.monotonic() < deadline:  # its first temp file
            time.sleep(0.001)
        for _ in range(10 * TRIALS):
            time.sleep(rng.uniform(0, 0.02))
            _freeze(writer.pid)
            partial += any(path.rglob("*.partial"))
            _check_chunks(path, chunks)
            _signal(writer.pid, signal.SIGCONT)
        time.sleep(rng.uniform(0, 0.02))
    finally:
        _signal(writer.pid, signal.SIGKILL)
        writer.join(60)
    assert writer.exitcode == -signal.SIGKILL
    _check_chunks(path, chunks)
    print(f"\nv{zarr_format}: {10 * TRIALS} freezes, {partial} mid-write (a .partial file present)")


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_a_chunk_cut_short_fails_to_decode(tmp_path, zarr_format):
    """What a store writing in place would leave: a chunk cut short (empty, inside the header, half, all but its last
    byte) is an error, never pixels; its neighbour still reads."""
    path = tmp_path / "a.zarr"
    stress.create_array(path, 2, zarr_format, "tiny")
    chunk_file = path / ("c/1/0/0/0" if zarr_format == 3 else "1.0.0.0")
    data = chunk_file.read_bytes()
    for cut in sorted({0, 1, 4, 16, 64, len(data) // 2, len(data) - 1}):
        chunk_file.write_bytes(data[:cut])
        array = zarr.open_array(path, mode="r")
        with pytest.raises(BitSwapError):
            array[1]
        np.testing.assert_array_equal(array[0], stress.chunk_image(0, 0))
