"""The API is safe to call from many threads at once, and loads each model once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

import bitswap_plugin as bsw
from bitswap_plugin import zoo


def test_concurrent_round_trips_share_one_model(photo):
    images = [np.roll(np.resize(photo, (96, 176, 3)), 7 * k, axis=1) for k in range(4)]
    zoo._loaded.clear()  # let the threads race to load the model

    def round_trip(image: np.ndarray) -> bool:
        return np.array_equal(bsw.decompress(bsw.compress(image)), image)

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert all(pool.map(round_trip, images))
    rgb = zoo.DEFAULT_MODELS[3]
    assert [key for key in zoo._loaded if key[0] == rgb] == [(rgb, "cpu")]
    serial = bsw.compress(images[0])
    with ThreadPoolExecutor(max_workers=2) as pool:
        assert set(pool.map(lambda _: bsw.compress(images[0]), range(2))) == {serial}
