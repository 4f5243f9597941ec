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
  ...) as far as the bits already pushed can feed their pops, so n patches
  need O(log n) sequential network passes; before each group the coder turns
  tail words into new lanes, up to a lane budget.

The schedule (group sizes and lanes added) is returned to be stored in the
file, so the decoder never has to re-derive the encoder's policy.
"""

from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .ans import AnsCoder
from .container import MAX_GROUP, MAX_LANES
from .distributions import DiscretizedLogistic, SharedLogistic
from .errors import CorruptFileError
from .integer_model import IntegerVAE, pixel_distributions
from .model import top_prior_codes
from .patches import PATCH, PatchGrid

METHODS = ("bitswap", "bbans")
FEED_MARGIN = 1.3
"""Patches differ: size a group for 30 % more pop bits per patch than seen so far."""
NETWORK_BATCH = {"cpu": 32, "cuda": 512}
"""Patches per network call by device type; any value gives identical results (integer network).
CPU: 32 keeps a batch's activations in cache; CUDA: larger batches launch fewer, fuller kernels."""


def network_batch(device: torch.device) -> int:
    """The default patches per network call on ``device``."""
    return NETWORK_BATCH.get(device.type, NETWORK_BATCH["cpu"])


@dataclass
class Plane:
    """One image plane (C, H, W uint8 tensor) and the model that codes it."""

    pixels: torch.Tensor
    model: IntegerVAE

    @property
    def grid(self) -> PatchGrid:
        return PatchGrid(self.pixels.shape[1], self.pixels.shape[2])


@dataclass
class Group:
    """Consecutive patches of the chain coded together, all under one model.

    A group may run over several planes (the frames of a stack); each
    ``(plane, start, stop)`` segment is a run of patches of one plane.
    """

    segments: list[tuple[int, int, int]]
    lanes_added: int

    @property
    def size(self) -> int:
        return sum(stop - start for _, start, stop in self.segments)


SUBPIXELS_PER_LANE = 768
"""Lane budget: each lane's final state costs ~5 bits net, so lanes trade rate for fewer ANS steps.
Measured on 8 photos-train crops (512x512): 1 lane per 384 / 768 / 1536 subpixels gave 4.2861 /
4.2797 / 4.2745 bits per subpixel in 2386 / 3606 / 6226 encoding steps (format 1: 4.2779, 15173)."""


def lane_budget(num_subpixels: int) -> int:
    """Most lanes worth having: one per :data:`SUBPIXELS_PER_LANE` subpixels."""
    return max(1, min(MAX_LANES, num_subpixels // SUBPIXELS_PER_LANE))


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


def _batched(fn: Callable, level: int, inp: torch.Tensor, batch: int) -> tuple[torch.Tensor, ...]:
    parts = [fn(level, inp[i : i + batch]) for i in range(0, inp.shape[0], batch)]
    return tuple(torch.cat(codes) for codes in zip(*parts))


class _GroupCoder:
    """The distributions of one group of ``n`` patches under one model, and the pushes and pops
    of each level (level 0 is the pixels, level L the top latent)."""

    def __init__(self, model: IntegerVAE, padding: torch.Tensor, batch: int, spread: bool) -> None:
        config = model.config
        self.model = model
        self.padding = padding
        self.known = padding if bool(padding.any()) else None
        """The padding mask where there is padding (pixel distributions without one skip its selects)."""
        self.batch = batch
        self.spread = spread
        """Whether the posterior codes spread (format version 2; see :mod:`.ans`)."""
        self.levels = config.latent_layers
        self.latent_bins = config.latent_bins
        self.pixel_shape = (padding.shape[0], config.channels, PATCH, PATCH)
        self.latent_shape = (padding.shape[0], config.latent_channels, PATCH // 2, PATCH // 2)

    def _posterior(self, level: int, below: torch.Tensor) -> DiscretizedLogistic:
        """q(z_{level+1} | z_level)."""
        mean, log_scale = _batched(self.model.posterior, level, below, self.batch)
        return DiscretizedLogistic(mean, log_scale, self.latent_bins)

    def pop_posterior(self, coder: AnsCoder, level: int, below: torch.Tensor) -> torch.Tensor:
        """Pop z_{level+1} ~ q(. | ``below``)."""
        return coder.pop(self._posterior(level, below), self.spread).view(self.latent_shape)

    def push_posterior(self, coder: AnsCoder, level: int, below: torch.Tensor, above: torch.Tensor) -> None:
        """Push ``above`` under q(. | ``below``): undoes :meth:`pop_posterior`."""
        coder.push(*self._posterior(level, below).ranges(above), self.spread)

    def _latent_prior(self, level: int, above: torch.Tensor | None) -> DiscretizedLogistic | SharedLogistic:
        """p(z_level | z_{level+1}); the top prior of z_L (one distribution for all symbols) when ``above`` is None."""
        if above is None:
            count = math.prod(self.latent_shape)
            return SharedLogistic(*top_prior_codes(self.model.config), self.latent_bins, count, self.padding.device)
        return DiscretizedLogistic(*_batched(self.model.prior, level, above, self.batch), self.latent_bins)

    def push_prior(self, coder: AnsCoder, level: int, z: list[torch.Tensor]) -> None:
        """Push ``z[level]`` under p(. | z[level + 1]) (the top prior at level L)."""
        if level == 0:
            codes = _batched(self.model.prior, 0, z[1], self.batch)
            for channels, dist in reversed(list(pixel_distributions(codes, z[0], self.known))):
                coder.push(*dist.ranges(z[0][:, channels]))
        else:
            coder.push(*self._latent_prior(level, z[level + 1] if level < self.levels else None).ranges(z[level]))

    def pop_prior(self, coder: AnsCoder, level: int, above: torch.Tensor | None) -> torch.Tensor:
        """Pop z_level under p(. | ``above``) (the top prior when ``above`` is None); padding decodes as 0."""
        if level > 0:
            return coder.pop(self._latent_prior(level, above)).view(self.latent_shape)
        codes = _batched(self.model.prior, 0, above, self.batch)
        x = torch.zeros(self.pixel_shape, dtype=torch.int64, device=self.padding.device)
        for channels, dist in pixel_distributions(codes, x, self.known):
            x[:, channels] = coder.pop(dist).view(x[:, channels].shape)
        return x


def _encode_group(coder: AnsCoder, gc: _GroupCoder, x: torch.Tensor, method: str) -> int:
    """Code one group; returns how many tail words its pops ate before its pushes refilled the tail."""
    start = low = coder.tail_length
    z = [x]

    def pop_latent(level: int) -> None:
        nonlocal low
        z.append(gc.pop_posterior(coder, level, z[level]))
        low = min(low, coder.tail_length)

    if method == "bitswap":
        for level in range(gc.levels):
            pop_latent(level)
            gc.push_prior(coder, level, z)
    else:
        for level in range(gc.levels):
            pop_latent(level)
        for level in range(gc.levels):
            gc.push_prior(coder, level, z)
    gc.push_prior(coder, gc.levels, z)
    return start - low


def _decode_group(coder: AnsCoder, gc: _GroupCoder, fill_padding: Callable, method: str) -> torch.Tensor:
    z: list[torch.Tensor] = [torch.empty(0)] * gc.levels + [gc.pop_prior(coder, gc.levels, None)]

    def pop_level(level: int) -> None:
        popped = gc.pop_prior(coder, level, z[level + 1])
        z[level] = fill_padding(popped) if level == 0 else popped

    def push_back(level: int) -> None:
        gc.push_posterior(coder, level, z[level], z[level + 1])

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


def _segments(sequence: Sequence[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """Split a run of (plane, patch) pairs into (plane, start, stop) segments."""
    segments: list[tuple[int, int, int]] = []
    for plane, patch in sequence:
        if segments and segments[-1][0] == plane and segments[-1][2] == patch:
            segments[-1] = (plane, segments[-1][1], patch + 1)
        else:
            segments.append((plane, patch, patch + 1))
    return segments


def _next_group(planes: Sequence[Plane], sequence: Sequence[tuple[int, int]], position: int, size: int) -> list[tuple[int, int, int]]:
    """Segments of up to ``size`` patches from ``position``, cut short where the model changes."""
    model = planes[sequence[position][0]].model
    stop = position + 1
    while stop < min(len(sequence), position + size) and planes[sequence[stop][0]].model is model:
        stop += 1
    return _segments(sequence[position:stop])


def schedule(planes: Sequence[Plane], seed_patches: int, sizes: Sequence[int], lanes_added: Sequence[int]) -> list[Group]:
    """The groups a stream's header describes; raises CorruptFileError if they do not fit the planes."""
    sequence = _patch_sequence(planes)
    if not 1 <= seed_patches <= len(sequence) or len(sizes) != len(lanes_added):
        raise CorruptFileError("corrupt stream: invalid seed or group schedule")
    position = seed_patches
    groups = []
    for size, lanes in zip(sizes, lanes_added):
        if size < 1 or position + size > len(sequence):
            raise CorruptFileError("corrupt stream: invalid group schedule")
        segments = _segments(sequence[position : position + size])
        if len({id(planes[plane].model) for plane, _, _ in segments}) != 1:
            raise CorruptFileError("corrupt stream: a group spans two models")
        groups.append(Group(segments, lanes))
        position += size
    if position != len(sequence):
        raise CorruptFileError("corrupt stream: group schedule does not cover the image")
    return groups


def _seed_blocks(planes: Sequence[Plane], seed_patches: int) -> list[tuple[int, slice, slice]]:
    """(plane, rows, cols) of the real pixels of each seed patch."""
    blocks = []
    for plane, patch in _patch_sequence(planes)[:seed_patches]:
        top, left = divmod(patch, planes[plane].grid.cols)
        blocks.append((plane, slice(top * PATCH, (top + 1) * PATCH), slice(left * PATCH, (left + 1) * PATCH)))
    return blocks


LANE_SYMBOLS = 16
"""Latent symbols per lane a group should have at least (see :func:`_lanes_to_add`)."""
MIN_LANES = 32
"""Lanes any group gets, budget permitting: fewer make small images slow to code."""


def _lanes_to_add(coder: AnsCoder, group_patches: int, model: IntegerVAE, budget: int) -> int:
    """Lanes to create before a group: toward ``budget``, keeping about LANE_SYMBOLS
    latent symbols per lane (MIN_LANES at least), and spending at most half the tail.

    Bit-Swap pops latents right after pushing data. Unspread (format version 1),
    a lane's first pop reads bits confined to its last pushed symbol's interval,
    the latents drift from the posterior and the rate suffers unless each lane
    codes many symbols (version 1 wrote 256 per lane; at 16 the rate was 0.9 %
    higher on 768x512 photos). Spread pops (version 2) read evenly scattered
    bits: at 16 per lane the information pushed minus popped is the same as at
    256 (4.2461 against 4.2473 bits per subpixel on photos-train crops), so what
    lanes still cost is only their final state (see :data:`SUBPIXELS_PER_LANE`).
    """
    c = model.config
    symbols = group_patches * c.latent_channels * (PATCH // 2) ** 2
    target = min(budget, max(MIN_LANES, symbols // LANE_SYMBOLS))
    return max(0, min(target - coder.num_lanes, max(coder.tail_length // 2, 1 - coder.num_lanes)))


def _group_input(planes: Sequence[Plane], group: Group, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The group's patches (int64) and padding mask, concatenated over its segments."""
    patches, masks = [], []
    for plane, start, stop in group.segments:
        grid = planes[plane].grid
        patches.append(grid.extract(planes[plane].pixels.to(device), start, stop))
        masks.append(grid.padding_mask(start, stop, device))
    return torch.cat(patches), torch.cat(masks)


def encode_planes(
    planes: Sequence[Plane],
    method: str,
    device: torch.device,
    seed_patches: int = 1,
    progress: Callable[[int], None] | None = None,
) -> tuple[bytes, list[Group], AnsCoder]:
    """Code all planes into one ANS message. Returns (seed bytes, groups, coder).

    Group sizes double (1, 1, 2, 4, ... up to MAX_GROUP) but never beyond what
    the tail can feed: each group's pops must be paid by bits already pushed,
    else they read phantom words and bits-back saves nothing. The need per
    patch is measured on the groups coded so far. The first group, coded
    before any measurement, gets only MIN_LANES lanes: each lane is made of a
    tail word its pops would otherwise have read (measured on 768x512 photos,
    its 128 lanes made it read ~100 phantom words, 3 kbit per image).
    """
    seed = encode_seed([planes[p].pixels[:, rows, cols].cpu().numpy() for p, rows, cols in _seed_blocks(planes, seed_patches)])
    coder = AnsCoder(device)
    coder.push_words(_words(seed, device))
    budget = lane_budget(sum(p.pixels.numel() for p in planes))
    sequence = _patch_sequence(planes)
    position = seed_patches
    groups = []
    limit, words_per_patch = 1, 0.0
    while position < len(sequence):
        affordable = int(coder.tail_length / (FEED_MARGIN * words_per_patch)) if words_per_patch else limit
        group = Group(_next_group(planes, sequence, position, max(1, min(limit, affordable))), 0)
        model = planes[group.segments[0][0]].model
        group.lanes_added = _lanes_to_add(coder, group.size, model, budget if words_per_patch else MIN_LANES)
        coder.grow(group.lanes_added)
        x, padding = _group_input(planes, group, device)
        eaten = _encode_group(coder, _GroupCoder(model, padding, network_batch(device), spread=True), x, method)
        words_per_patch = max(words_per_patch, eaten / group.size)
        groups.append(group)
        position += group.size
        limit = min(MAX_GROUP, 2 * group.size if len(groups) > 1 else 1)
        if progress:
            progress(group.size)
    return seed, groups, coder


def _fill_padding(planes: Sequence[Plane], group: Group, x: torch.Tensor) -> torch.Tensor:
    """Rebuild the pad pixels of a group's decoded patches, segment by segment."""
    parts = x.split([b - a for _, a, b in group.segments])
    return torch.cat([planes[p].grid.fill_padding(part, a, b) for part, (p, a, b) in zip(parts, group.segments, strict=True)])


def decode_planes(
    coder: AnsCoder,
    planes: Sequence[Plane],
    groups: Sequence[Group],
    seed_patches: int,
    seed_length: int,
    method: str,
    spread: bool,
    batch: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Decode into the (preallocated, uint8) ``plane.pixels`` tensors, in place; ``spread``
    for streams of format version 2 (the encoder here always writes them); ``batch``
    patches per network call (default :func:`network_batch`)."""
    for group in reversed(groups):
        first = planes[group.segments[0][0]]
        padding = torch.cat([planes[p].grid.padding_mask(a, b, coder.device) for p, a, b in group.segments])
        gc = _GroupCoder(first.model, padding, batch or network_batch(coder.device), spread)
        x = _decode_group(coder, gc, functools.partial(_fill_padding, planes, group), method).to(torch.uint8)
        for part, (p, a, b) in zip(x.split([b - a for _, a, b in group.segments]), group.segments, strict=True):
            planes[p].grid.insert(planes[p].pixels, part, a, b)
        coder.shrink(group.lanes_added)
        if progress:
            progress(group.size)
    if coder.num_lanes:
        raise CorruptFileError("corrupt stream: lanes left after decoding")
    words = -(-seed_length // 4)
    if coder.tail_length < words:
        raise CorruptFileError("corrupt stream: seed block missing")
    seed = coder.tail[coder.tail_length - words :].cpu().numpy().astype("<u4").tobytes()[:seed_length]
    blocks = _seed_blocks(planes, seed_patches)
    shapes = [tuple(planes[p].pixels[:, rows, cols].shape) for p, rows, cols in blocks]
    for (p, rows, cols), block in zip(blocks, decode_seed(seed, shapes)):
        planes[p].pixels[:, rows, cols] = torch.from_numpy(block).to(planes[p].pixels.device)
