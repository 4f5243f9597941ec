"""Bit-Swap and BB-ANS: coding patches of image planes with a hierarchical VAE.

For one group of patches, with ``z_0 = x``:

* **Bit-Swap** encodes, for i = 0 .. L-1: pop ``z_{i+1} ~ q(. | z_i)``, push
  ``z_i`` under ``p(. | z_{i+1})``; then push ``z_L`` under the top prior. It
  needs only the bits of one pop ahead, however deep the model.
* **BB-ANS** pops all of ``z_1 .. z_L`` first, then pushes ``x, z_1, .., z_L``.

Decoding runs the mirror image. The patches of all planes form one chain:

* the first patch is the *seed*: it is deflated and laid at the bottom of the
  stack, so the first pops read real image bits, not random ones;
* the other patches are coded in groups that grow geometrically (1, 1, 2, 4,
  ...), each group popping bits the earlier groups pushed, so n patches need
  O(log n) sequential network passes; before each group the coder turns tail
  words into new lanes, up to a lane budget.

The schedule (group sizes and lanes added) is returned to be stored in the
file, so the decoder never has to re-derive the encoder's policy.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .ans import AnsCoder
from .distributions import DiscretizedLogistic
from .errors import CorruptFileError
from .patches import PATCH, PatchGrid

METHODS = ("bitswap", "bbans")
MAX_GROUP = 256
"""Most patches coded in one group (bounds memory for huge images)."""
NETWORK_BATCH = 64
"""Patches per network call; any value gives identical results (integer network)."""
PIXEL_BINS = 256


@dataclass
class Plane:
    """One image plane (C, H, W uint8 tensor) and the model that codes it."""

    pixels: torch.Tensor
    model: object  # IntegerVAE

    @property
    def grid(self) -> PatchGrid:
        return PatchGrid(self.pixels.shape[1], self.pixels.shape[2])


@dataclass
class Group:
    """A run of consecutive patches of one plane, coded together."""

    plane: int
    start: int
    stop: int
    lanes_added: int


MIN_LANES = 64
"""Lanes a group gets at least: fewer make the step loop slow on any image."""


def lane_budget(num_subpixels: int) -> int:
    """Lanes worth having: each costs a few bits of final state, so ~1 per 384 subpixels."""
    return max(MIN_LANES, min(4096, num_subpixels // 384))


# -- the seed --------------------------------------------------------------


def encode_seed(blocks: Sequence[np.ndarray]) -> bytes:
    """Deflate (C, h, w) uint8 blocks after a left-neighbour difference filter."""
    deltas = [np.diff(b, axis=2, prepend=np.zeros_like(b[:, :, :1])) for b in blocks]
    return zlib.compress(b"".join(d.tobytes() for d in deltas), 9)


def decode_seed(data: bytes, shapes: Sequence[tuple[int, int, int]]) -> list[np.ndarray]:
    """Inverse of :func:`encode_seed`, given the block shapes."""
    sizes = [int(np.prod(shape)) for shape in shapes]
    try:
        raw = zlib.decompressobj().decompress(data, sum(sizes) + 1)
    except zlib.error as exc:
        raise CorruptFileError(f"corrupt stream: seed block does not inflate ({exc})") from None
    if len(raw) != sum(sizes):
        raise CorruptFileError("corrupt stream: seed block has the wrong size")
    offsets = np.cumsum([0] + sizes)
    flat = np.frombuffer(raw, np.uint8)
    return [np.cumsum(flat[a:b].reshape(shape), axis=2, dtype=np.uint8) for a, b, shape in zip(offsets, offsets[1:], shapes)]


def _words(data: bytes, device: torch.device) -> torch.Tensor:
    padded = data + bytes(-len(data) % 4)
    return torch.from_numpy(np.frombuffer(padded, "<u4").astype(np.int64)).to(device)


# -- one group -----------------------------------------------------------


def _batched(fn: Callable, level: int, inp: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    parts = [fn(level, inp[i : i + batch]) for i in range(0, inp.shape[0], batch)]
    return torch.cat([m for m, _ in parts]), torch.cat([s for _, s in parts])


class _GroupCoder:
    """The distributions of one group of ``n`` patches under one model."""

    def __init__(self, model, padding: torch.Tensor, batch: int) -> None:
        config = model.config
        self.model = model
        self.padding = padding
        self.batch = batch
        self.levels = config.latent_layers
        self.latent_bins = config.latent_bins
        self.latent_shape = (padding.shape[0], config.latent_channels, PATCH // 2, PATCH // 2)

    def posterior(self, level: int, below: torch.Tensor) -> DiscretizedLogistic:
        """q(z_{level+1} | z_level)."""
        mean, log_scale = _batched(self.model.posterior, level, below, self.batch)
        return DiscretizedLogistic(mean, log_scale, self.latent_bins)

    def prior(self, level: int, above: torch.Tensor | None) -> DiscretizedLogistic:
        """p(z_level | z_{level+1}); the top prior of z_L when ``above`` is None."""
        if above is None:
            mean, log_scale = self.model.top_prior(self.latent_shape, self.padding.device)
            return DiscretizedLogistic(mean, log_scale, self.latent_bins)
        mean, log_scale = _batched(self.model.prior, level, above, self.batch)
        if level == 0:
            return DiscretizedLogistic(mean, log_scale, PIXEL_BINS, self.padding.expand(mean.shape))
        return DiscretizedLogistic(mean, log_scale, self.latent_bins)


def _encode_group(coder: AnsCoder, gc: _GroupCoder, x: torch.Tensor, method: str) -> None:
    z = [x]
    if method == "bitswap":
        for level in range(gc.levels):
            z.append(coder.pop(gc.posterior(level, z[level])).view(gc.latent_shape))
            coder.push(*gc.prior(level, z[level + 1]).ranges(z[level]))
    else:
        for level in range(gc.levels):
            z.append(coder.pop(gc.posterior(level, z[level])).view(gc.latent_shape))
        for level in range(gc.levels):
            coder.push(*gc.prior(level, z[level + 1]).ranges(z[level]))
    coder.push(*gc.prior(gc.levels, None).ranges(z[-1]))


def _decode_group(coder: AnsCoder, gc: _GroupCoder, fill_padding: Callable, pixel_shape: tuple, method: str) -> torch.Tensor:
    z: list[torch.Tensor] = [torch.empty(0)] * gc.levels + [coder.pop(gc.prior(gc.levels, None)).view(gc.latent_shape)]

    def pop_level(level: int) -> None:
        popped = coder.pop(gc.prior(level, z[level + 1]))
        z[level] = fill_padding(popped.view(pixel_shape)) if level == 0 else popped.view(gc.latent_shape)

    def push_back(level: int) -> None:
        coder.push(*gc.posterior(level, z[level]).ranges(z[level + 1]))

    if method == "bitswap":
        for level in reversed(range(gc.levels)):
            pop_level(level)
            push_back(level)
    else:
        for level in reversed(range(gc.levels)):
            pop_level(level)
        for level in reversed(range(gc.levels)):
            push_back(level)
    return z[0]


# -- whole images -----------------------------------------------------------


def _patch_sequence(planes: Sequence[Plane]) -> list[tuple[int, int]]:
    """(plane, patch) of every patch of the chain, in coding order."""
    return [(index, patch) for index, plane in enumerate(planes) for patch in range(len(plane.grid))]


def _groups(planes: Sequence[Plane], seed_patches: int) -> list[tuple[int, int, int]]:
    """(plane, start, stop) of the groups after the seed: 1, 1, 2, 4, ... patches, one plane each."""
    groups = []
    size, next_size = 1, 1
    sequence = _patch_sequence(planes)[seed_patches:]
    while sequence:
        plane, start = sequence[0]
        stop = min(start + size, len(planes[plane].grid))
        groups.append((plane, start, stop))
        sequence = sequence[stop - start :]
        size, next_size = next_size, min(MAX_GROUP, 2 * next_size)
    return groups


def _seed_blocks(planes: Sequence[Plane], seed_patches: int) -> list[tuple[int, int, slice, slice]]:
    """(plane, patch, rows, cols) of the real pixels of each seed patch."""
    blocks = []
    for plane, patch in _patch_sequence(planes)[:seed_patches]:
        grid = planes[plane].grid
        top, left = divmod(patch, grid.cols)
        blocks.append((plane, patch, slice(top * PATCH, (top + 1) * PATCH), slice(left * PATCH, (left + 1) * PATCH)))
    return blocks


def _lanes_to_add(coder: AnsCoder, budget: int) -> int:
    """Grow toward the budget, spending at most half the tail on new lanes."""
    return max(0, min(budget - coder.num_lanes, max(coder.tail_length // 2, MIN_LANES - coder.num_lanes)))


def encode_planes(
    planes: Sequence[Plane],
    method: str,
    device: torch.device,
    seed_patches: int = 1,
    progress: Callable[[int], None] | None = None,
) -> tuple[bytes, list[Group], AnsCoder]:
    """Code all planes into one ANS message. Returns (seed bytes, schedule, coder)."""
    seed = encode_seed([planes[p].pixels[:, rows, cols].cpu().numpy() for p, _, rows, cols in _seed_blocks(planes, seed_patches)])
    coder = AnsCoder(device)
    coder._push_words(_words(seed, device))
    budget = lane_budget(sum(p.pixels.numel() for p in planes))
    schedule = []
    for plane_index, start, stop in _groups(planes, seed_patches):
        plane = planes[plane_index]
        grid = plane.grid
        lanes = _lanes_to_add(coder, budget)
        coder.grow(lanes)
        x = grid.extract(plane.pixels.to(device), start, stop)
        _encode_group(coder, _GroupCoder(plane.model, grid.padding_mask(start, stop, device), NETWORK_BATCH), x, method)
        schedule.append(Group(plane_index, start, stop, lanes))
        if progress:
            progress(stop - start)
    return seed, schedule, coder


def decode_planes(
    coder: AnsCoder,
    planes: Sequence[Plane],
    schedule: Sequence[Group],
    seed_patches: int,
    seed_length: int,
    method: str,
    batch: int = NETWORK_BATCH,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Decode into the (preallocated, uint8) ``plane.pixels`` tensors, in place."""
    for group in reversed(schedule):
        plane = planes[group.plane]
        grid = plane.grid
        start, stop = group.start, group.stop
        gc = _GroupCoder(plane.model, grid.padding_mask(start, stop, coder.device), batch)
        shape = (stop - start, plane.pixels.shape[0], PATCH, PATCH)
        x = _decode_group(coder, gc, lambda p: grid.fill_padding(p, start, stop), shape, method)
        grid.insert(plane.pixels, x.to(torch.uint8), start, stop)
        coder.shrink(group.lanes_added)
        if progress:
            progress(stop - start)
    if coder.num_lanes:
        raise CorruptFileError("corrupt stream: lanes left after decoding")
    words = -(-seed_length // 4)
    if coder.tail_length < words:
        raise CorruptFileError("corrupt stream: seed block missing")
    seed = coder.tail[coder.tail_length - words :].cpu().numpy().astype("<u4").tobytes()[:seed_length]
    blocks = _seed_blocks(planes, seed_patches)
    shapes = [tuple(planes[p].pixels[:, rows, cols].shape) for p, _, rows, cols in blocks]
    for (p, _, rows, cols), block in zip(blocks, decode_seed(seed, shapes)):
        planes[p].pixels[:, rows, cols] = torch.from_numpy(block).to(planes[p].pixels.device)
