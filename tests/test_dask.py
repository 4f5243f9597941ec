"""Dask arrays of photo crops written to Zarr with the codec by worker processes, and read back."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from distributed import Client, LocalCluster
from fixtures.photos import crops

from bitswap_plugin import BitSwap, BitSwapCodec, zoo


@pytest.fixture(scope="module")
def client():
    with (
        LocalCluster(processes=True, n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        yield client


def _models_in_memory() -> list[tuple[str, str]]:
    """The (model, device) pairs this process has loaded (each is loaded once, then shared)."""
    return sorted(zoo._loaded)


@pytest.mark.parametrize(
    "images, zarr_chunks, dask_chunks, zarr_format",
    [
        # 300 single-patch chunks (each stored as its deflated seed patch), 25 to a task
        (crops(300), (1, 32, 32, 3), (25, 32, 32, 3), 3),
        # 32x64 chunks are two patches: the network codes them on the workers
        (crops(8, 32, 64, seed=3), (1, 32, 64, 3), (2, 32, 64, 3), 2),
    ],
    ids=["300x32x32-v3", "8x32x64-v2"],
)
def test_workers_write_and_read_zarr(client, tmp_path, images, zarr_chunks, dask_chunks, zarr_format):
    coding = {"compressors": BitSwap()} if zarr_format == 2 else {"serializer": BitSwapCodec(), "compressors": None}
    path = str(tmp_path / "images.zarr")
    da.from_array(images, chunks=dask_chunks).to_zarr(path, chunks=zarr_chunks, zarr_format=zarr_format, **coding)
    np.testing.assert_array_equal(da.from_zarr(path, chunks=dask_chunks).compute(), images)
    loaded = client.run(_models_in_memory)
    assert len(loaded) == 2 and all(models == [(zoo.DEFAULT_MODELS[3], "cpu")] for models in loaded.values())


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_workers_write_and_read_ome_zarr(client, tmp_path, zarr_format):
    """A (t, c, z, y, x) array of grey planes, one (z, y, x) stack per chunk and task."""
    images = crops(6, 32, 48, seed=4)[..., 0].reshape(2, 1, 3, 32, 48)
    coding = {"compressors": BitSwap()} if zarr_format == 2 else {"serializer": BitSwapCodec(), "compressors": None}
    path = str(tmp_path / "images.zarr")
    da.from_array(images, chunks=(1, 1, 3, 32, 48)).to_zarr(path, zarr_format=zarr_format, **coding)
    np.testing.assert_array_equal(da.from_zarr(path).compute(), images)
