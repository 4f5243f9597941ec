"""Bit-Swap and BB-ANS: coding patches of image planes with a hierarchical VAE.

In the spirit of craystack, each level of the chain is a codec: a (push,
pop) pair acting on the ANS message and on ``z = [x, z1, .., zL]``.

* :class:`Posterior` (level i): encoding *pops* ``z_{i+1} ~ q(. | z_i)`` (the
  bits-back step); decoding pushes it back.
* :class:`Prior` (level i): encoding *pushes* ``z_i`` under ``p(. | z_{i+1})``
  (the pixels' likelihood at level 0, the top prior at level L); decoding pops it.

A method is a list of these steps (:data:`METHODS`); its decoder is the same
list run backwards, each step inverted, so the decoder follows from the
encoder rather than being kept in step by hand:

* **Bit-Swap**: for i = 0 .. L-1, ``Posterior(i), Prior(i)``; then ``Prior(L)``.
  It needs only the bits of one pop ahead, however deep the model.
* **BB-ANS**: every ``Posterior`` first, then ``Prior(0) .. Prior(L)``.

The patches of all planes form one chain:

* the first patches are the *seed*: deflated and laid at the bottom of the
  stack, so that the first pops read real image bits, not random ones (one
  patch, or more where one holds fewer bits than those pops take);
* the other patches are coded in groups that grow geometrically (1, 1, 2, 4,
  ...) as far as the bits already pushed can feed their pops, so n patches
  need O(log n) sequential network passes; before each group the coder turns
  tail words into new lanes, up to a lane budget.

The encoder returns its decisions as a :class:`~bitswap_plugin.fileformat.StreamPlan`
to be stored in the file, so the decoder never re-derives the encoder's policy.
"""

from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .ans import AnsCoder
from .distributions import TOTAL, DiscretizedLogistic, DiscretizedMixture, EntropyModel
from .errors import CorruptFileError
from .fileformat import PATCH, SCALE_OFFSET_RANGE, VERSION, StreamPlan, Version, blend_code, smooth_blend
from .fixedpoint import CODE_LENGTH_FRAC, code_length
from .integer_model import IntegerVAE
from .patches import PatchGrid
from .polyphase import UNUSABLE, blend_means

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
"""Lane budget: each lane's final state costs ~5 bits net, so lanes trade rate for fewer ANS steps
(benchmarks/RESULTS.md, "What a lane costs")."""


def lane_budget(num_subpixels: int, version: Version = VERSION) -> int:
    """Most lanes worth having: one per :data:`SUBPIXELS_PER_LANE` subpixels."""
    return max(1, min(version.max_lanes, num_subpixels // SUBPIXELS_PER_LANE))


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


# -- one group: the level codecs and the two methods ----------------------


@dataclass(frozen=True)
class StepAdjustments:
    """A stream's per-step changes to one model's likelihood (:class:`.fileformat.StreamPlan`):
    log-scale offsets and smooth-area blends, one per step each, or none."""

    offsets: tuple[int, ...] = ()
    blends: tuple[int, ...] = ()

    @property
    def header_bytes(self) -> int:
        return len(self.offsets) + len(self.blends)


@dataclass
class GroupContext:
    """What the level codecs of one group of ``count`` patches share."""

    model: IntegerVAE
    count: int
    device: torch.device
    known: torch.Tensor | None
    """The padding mask where the group has padding (pad pixels cost nothing and decode as 0)."""
    batch: int
    spread: bool
    """Whether the posterior's pushes and pops are spread (a format version's choice; see :mod:`.ans`)."""
    fill_padding: Callable[[torch.Tensor], torch.Tensor] | None = None
    """Decoding: rebuilds the pad pixels of the decoded patches."""
    adjustments: StepAdjustments = field(default_factory=StepAdjustments)
    """The stream's changes to the likelihood's steps (none: the model's own distributions)."""

    def likelihood_steps(self, likelihood, x: torch.Tensor) -> Iterator[tuple[tuple, EntropyModel]]:
        """The likelihood's (index, entropy model) steps, each blended and rescaled as the stream says."""
        offsets, blends = self.adjustments.offsets, self.adjustments.blends
        steps = likelihood.steps(x, blends) if blends else likelihood.steps(x)
        if not offsets:
            yield from steps
            return
        for (index, model), offset in zip(steps, offsets, strict=True):
            yield index, model.rescaled(offset) if offset else model


@dataclass(frozen=True)
class Posterior:
    """Level ``level``'s bits-back codec: ``z_{level+1}`` under q(. | z_level)."""

    level: int

    def encode(self, coder: AnsCoder, group: GroupContext, z: list) -> None:
        """Pop ``z_{level+1}`` from the message."""
        posterior = group.model.posterior(self.level, z[self.level], group.batch)
        z[self.level + 1] = coder.pop(posterior, group.spread).view(group.model.config.latent_shape(group.count))

    def decode(self, coder: AnsCoder, group: GroupContext, z: list) -> None:
        """Push ``z_{level+1}`` back: undoes :meth:`encode`."""
        posterior = group.model.posterior(self.level, z[self.level], group.batch)
        coder.push(*posterior.ranges(z[self.level + 1]), group.spread)


@dataclass(frozen=True)
class Prior:
    """Level ``level``'s data codec: ``z_level`` under p(. | z_{level+1}) (the pixels' likelihood
    at level 0, decoded in its steps; the top prior at level L)."""

    level: int

    def encode(self, coder: AnsCoder, group: GroupContext, z: list) -> None:
        """Push ``z_level``."""
        if self.level == 0:
            x = z[0]
            # Each step's (start, frequency) pairs, not its entropy model, wait for the reversed pushes:
            # a mixture's parameters for a whole group would hold several times the memory.
            steps = group.likelihood_steps(group.model.likelihood(z[1], group.known, group.batch), x)
            for ranges in reversed([model.ranges(x[index]) for index, model in steps]):
                coder.push(*ranges)
        else:
            coder.push(*self._model(group, z).ranges(z[self.level]))

    def decode(self, coder: AnsCoder, group: GroupContext, z: list) -> None:
        """Pop ``z_level``: undoes :meth:`encode`."""
        if self.level == 0:
            likelihood = group.model.likelihood(z[1], group.known, group.batch)
            x = torch.zeros(likelihood.shape, dtype=torch.int64, device=z[1].device)
            for index, model in group.likelihood_steps(likelihood, x):
                x[index] = coder.pop(model).view(x[index].shape)
            z[0] = group.fill_padding(x)
        else:
            z[self.level] = coder.pop(self._model(group, z)).view(group.model.config.latent_shape(group.count))

    def _model(self, group: GroupContext, z: list) -> EntropyModel:
        layers = group.model.config.latent_layers
        if self.level == layers:
            return group.model.top_prior(math.prod(group.model.config.latent_shape(group.count)), group.device)
        return group.model.prior(self.level, z[self.level + 1], group.batch)


Step = Posterior | Prior


def bitswap(layers: int) -> list[Step]:
    """Bit-Swap: pop z_{i+1}, push z_i, level by level; then the top layer."""
    return [step for level in range(layers) for step in (Posterior(level), Prior(level))] + [Prior(layers)]


def bbans(layers: int) -> list[Step]:
    """BB-ANS: pop every latent layer, then push the data and every layer."""
    return [Posterior(level) for level in range(layers)] + [Prior(level) for level in range(layers + 1)]


METHODS: dict[str, Callable[[int], list[Step]]] = {"bitswap": bitswap, "bbans": bbans}
"""Each method's steps for a model of ``layers`` latent layers (names as in :data:`.fileformat.METHODS`)."""


def encode_group(coder: AnsCoder, group: GroupContext, x: torch.Tensor, steps: Sequence[Step]) -> int:
    """Code one group; returns how many tail words its pops ate before its pushes refilled the tail."""
    start = low = coder.tail_length
    z = [x] + [None] * group.model.config.latent_layers
    for step in steps:
        step.encode(coder, group, z)
        low = min(low, coder.tail_length)
    return start - low


def decode_group(coder: AnsCoder, group: GroupContext, steps: Sequence[Step]) -> torch.Tensor:
    """Decode one group: the steps of :func:`encode_group` backwards, each inverted. Returns the pixels."""
    z: list = [None] * (group.model.config.latent_layers + 1)
    for step in reversed(steps):
        step.decode(coder, group, z)
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


def schedule(planes: Sequence[Plane], plan: StreamPlan) -> list[Group]:
    """The groups a stream's plan describes; raises CorruptFileError if they do not fit the planes."""
    sequence = _patch_sequence(planes)
    if not 1 <= plan.seed_patches <= len(sequence) or len(plan.group_sizes) != len(plan.lanes_added):
        raise CorruptFileError("corrupt stream: invalid seed or group schedule")
    position = plan.seed_patches
    groups = []
    for size, lanes in zip(plan.group_sizes, plan.lanes_added):
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
    codes many symbols (version 1 wrote 256 per lane). Spread pops (version 2)
    read evenly scattered bits, so 16 per lane cost no more than 256
    (benchmarks/RESULTS.md, "What a lane costs").
    """
    symbols = math.prod(model.config.latent_shape(group_patches))
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


Adjustments = Mapping[IntegerVAE, StepAdjustments]
"""Each model's step adjustments; models it lacks have none."""


def _context(planes: Sequence[Plane], group: Group, padding: torch.Tensor, batch: int, version: Version,
             adjustments: Adjustments, decoding: bool = False) -> GroupContext:
    """The codecs' shared state for ``group`` (whose padding mask is ``padding``)."""
    model = planes[group.segments[0][0]].model
    known = padding if bool(padding.any()) else None
    fill = functools.partial(_fill_padding, planes, group) if decoding else None
    return GroupContext(model, group.size, padding.device, known, batch, version.spread_posterior, fill, adjustments.get(model, StepAdjustments()))


MAX_SEED_PATCHES = 16
"""Most patches a seed holds when :func:`encode_planes` chooses it."""


class _ChainEncoder:
    """An encoder partway along the chain: its plan so far, its message and its position."""

    def __init__(self, planes: Sequence[Plane], method: str, device: torch.device, seed_patches: int, adjustments: Adjustments) -> None:
        self.planes, self.method, self.device, self.adjustments = planes, method, device, adjustments
        self.sequence = _patch_sequence(planes)
        self.plan = StreamPlan(method, seed_patches)
        seed = encode_seed([planes[p].pixels[:, rows, cols].cpu().numpy() for p, rows, cols in _seed_blocks(planes, seed_patches)])
        self.plan.seed_length = len(seed)
        self.coder = AnsCoder(device)
        self.coder.push_words(_words(seed, device))
        self.budget = lane_budget(sum(p.pixels.numel() for p in planes), self.plan.version)
        self.position = seed_patches
        self.limit, self.words_per_patch = 1, 0.0

    @property
    def done(self) -> bool:
        return self.position == len(self.sequence)

    def code_group(self, stop: int | None = None) -> None:
        """Code the next group (ending at chain position ``stop`` at the latest)."""
        coder, plan = self.coder, self.plan
        affordable = int(coder.tail_length / (FEED_MARGIN * self.words_per_patch)) if self.words_per_patch else self.limit
        size = max(1, min(self.limit, affordable, (len(self.sequence) if stop is None else stop) - self.position))
        group = Group(_next_group(self.planes, self.sequence, self.position, size), 0)
        model = self.planes[group.segments[0][0]].model
        group.lanes_added = _lanes_to_add(coder, group.size, model, self.budget if self.words_per_patch else MIN_LANES)
        coder.grow(group.lanes_added)
        x, padding = _group_input(self.planes, group, self.device)
        context = _context(self.planes, group, padding, network_batch(self.device), plan.version, self.adjustments)
        eaten = encode_group(coder, context, x, METHODS[self.method](model.config.latent_layers))
        self.words_per_patch = max(self.words_per_patch, eaten / group.size)
        plan.group_sizes.append(group.size)
        plan.lanes_added.append(group.lanes_added)
        self.position += group.size
        self.limit = min(plan.version.max_group, 2 * group.size if len(plan.group_sizes) > 1 else 1)

    def start(self) -> None:
        """Code groups until one reads no phantom words (the start-up, where the seed feeds the pops)."""
        while not self.done:
            phantom = self.coder.phantom_words
            self.code_group()
            if self.coder.phantom_words == phantom:
                return


def _started_chain(planes: Sequence[Plane], method: str, device: torch.device, adjustments: Adjustments) -> _ChainEncoder:
    """The chain begun on a seed of 1 patch, or of 2, 4 ... while that makes the message shorter.

    Until the tail can feed them, the first groups' posterior pops read phantom
    words: a random sample of up to one patch's posterior information (13,000
    to 24,000 bits with the default models) that the file then carries without
    getting it back. Where the first patch deflates to less than that (flat or
    smooth content, most grey images), a larger seed feeds the pops with image
    bits instead, at deflate's rate rather than the model's. The seed doubles
    while the best chain so far reads phantom words and the larger seed's
    message is shorter once both have coded the same patches (the one behind
    codes up to the other's position, so its group there may be cut short).
    """
    best = _ChainEncoder(planes, method, device, 1, adjustments)
    best.start()
    seed_patches = 2
    while best.coder.phantom_words and seed_patches <= min(MAX_SEED_PATCHES, len(best.sequence)):
        trial = _ChainEncoder(planes, method, device, seed_patches, adjustments)
        trial.start()
        position = max(best.position, trial.position)
        for chain in (best, trial):
            while chain.position < position:
                chain.code_group(position)
        if trial.coder.bit_length() >= best.coder.bit_length():
            break
        best, seed_patches = trial, 2 * seed_patches
    return best


def encode_planes(
    planes: Sequence[Plane],
    method: str,
    device: torch.device,
    seed_patches: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    adjustments: Adjustments | None = None,
) -> tuple[StreamPlan, AnsCoder]:
    """Code all planes into one ANS message with the current format version: (plan, coder).

    The seed holds the first ``seed_patches`` patches (default: 1, or more
    where that makes the message shorter, see :func:`_started_chain`). Group sizes double
    (1, 1, 2, 4, ... up to the version's largest group) but never beyond what
    the tail can feed: each group's pops must be paid by bits already pushed,
    else they read phantom words and bits-back saves nothing. The need per
    patch is measured on the groups coded so far. The first group, coded
    before any measurement, gets only MIN_LANES lanes: each lane is made of a
    tail word its pops would otherwise have read. ``progress(done, total)``
    follows each group, in patches (the seed's aside).
    """
    adjustments = adjustments or {}
    if seed_patches is None:
        chain = _started_chain(planes, method, device, adjustments)
    else:
        chain = _ChainEncoder(planes, method, device, seed_patches, adjustments)
    total = len(chain.sequence) - chain.plan.seed_patches
    while True:
        if progress and chain.plan.group_sizes:
            progress(chain.position - chain.plan.seed_patches, total)
        if chain.done:
            return chain.plan, chain.coder
        chain.code_group()


SCALE_OFFSET_MOVES = (64, 32, 16, 8, 4, 2, 1)
"""The offset search's moves: from 0, each tries the best offset so far plus and minus one of these."""
REFINE_MOVES = SCALE_OFFSET_MOVES[4:]
"""The moves of the offsets' second descent, after the blends: those move the offsets by a few
codes at most (on Kodak, longer moves found the same files' sizes to 0.002 %)."""
BLEND_CANDIDATES = tuple(blend_code(level, weight) for level in (2, 3, 4, 5, 9) for weight in (4, 8, 12, 16))
"""The smooth-area blends the encoder tries on each step: thresholds 2 to 16 and everywhere, a
quarter, half, three quarters or all of the way to the neighbours' average."""


def posterior_sample(model: IntegerVAE, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One z1 ~ q(z1 | x) for patches ``x``, its uniform draws taken from ``generator`` on the CPU
    (so every device draws the same)."""
    posterior = model.posterior(0, x)
    cf = torch.randint(0, TOTAL, (len(posterior),), generator=generator).to(x.device)
    return posterior.locate(cf)[0].view(model.config.latent_shape(x.shape[0]))


@torch.no_grad()
def fit_adjustments(model: IntegerVAE, x: torch.Tensor, generator: torch.Generator) -> list[tuple[StepAdjustments, float]]:
    """The step adjustments that code the patches ``x`` (int64, N x C x 32 x 32) in the fewest
    bits given one sample z1 ~ q(z1 | x), each with what it saves there against none: log-scale
    offsets alone, then (models with pixel context) offsets with smooth-area blends.

    A model trained on photographs predicts the noise of photographs: wider distributions than
    clean content needs (flat areas, graphics, low-noise scans), sharper than noisy content
    does; and its quantized networks place means less exactly than a plain average of the
    decoded neighbours where those agree (smooth areas). Offsets come from a descent over the
    moves of :data:`SCALE_OFFSET_MOVES` (the code length is close to convex in them); blends
    from the :data:`BLEND_CANDIDATES` each step codes best with, after which the offsets descend
    again. All steps are searched at once. Code lengths are exact integers
    (:func:`~.fixedpoint.code_length`) and the sample is drawn from ``generator`` on the CPU, so
    every device and thread count finds the same adjustments.
    """
    steps = joint_steps(model, x, generator)
    none = torch.zeros(model.likelihood_steps, dtype=torch.int64, device=x.device)
    unadjusted = steps.lengths(none, steps.mean)
    offsets, length = steps.descend(none, steps.mean, unadjusted, SCALE_OFFSET_MOVES)
    fits = [(StepAdjustments(tuple(offsets.tolist())), int((unadjusted - length).sum()) / (1 << CODE_LENGTH_FRAC))]
    if model.pixel_context:
        blends = steps.choose_blends(offsets, length)
        mean = steps.blended(blends)
        offsets, length = steps.descend(offsets, mean, steps.lengths(offsets, mean), REFINE_MOVES)
        fits.append((StepAdjustments(tuple(offsets.tolist()), tuple(blends)), int((unadjusted - length).sum()) / (1 << CODE_LENGTH_FRAC)))
    return fits


def joint_steps(model: IntegerVAE, x: torch.Tensor, generator: torch.Generator) -> _JointSteps:
    """All likelihood steps of the patches ``x`` given one sample z1 ~ q(z1 | x) (drawn from
    ``generator``), as one family: what the step adjustments are fitted on."""
    likelihood = model.likelihood(posterior_sample(model, x, generator))
    parts = list(likelihood.predicted_steps(x) if model.pixel_context else ((i, f, None) for i, f in likelihood.steps(x)))
    sizes = torch.tensor([len(family) for _, family, _ in parts], device=x.device)
    predictions = [_no_prediction(len(family), x.device) if prediction is None else prediction for _, family, prediction in parts]
    mixture = isinstance(parts[0][1], DiscretizedMixture)
    return _JointSteps(
        torch.repeat_interleave(torch.arange(len(parts), device=x.device), sizes),
        torch.cat([family.mean for _, family, _ in parts], -1),
        torch.cat([family.log_scale for _, family, _ in parts], -1),
        torch.cat([x[index].reshape(-1) for index, _, _ in parts]),
        parts[0][1].num_bins,
        (torch.cat([target for target, _ in predictions]), torch.cat([spread for _, spread in predictions])),
        torch.cat([family.weights for _, family, _ in parts], -1) if mixture else None,
    )


@dataclass
class _JointSteps:
    """All steps of a likelihood as one family: each symbol's step, mean and log-scale codes, and
    (for the smooth-area blends) its neighbour prediction, in steps that have one. A mixture's
    codes are (K, symbols), with its weights; adjustments move its components, not its weights."""

    step_of: torch.Tensor
    mean: torch.Tensor
    log_scale: torch.Tensor
    symbols: torch.Tensor
    num_bins: int
    prediction: tuple[torch.Tensor, torch.Tensor]
    weights: torch.Tensor | None = None

    def family(self, mean: torch.Tensor, log_scale: torch.Tensor, which: torch.Tensor | None = None) -> EntropyModel:
        """The entropy model of the symbols ``which`` (default all) with these codes."""
        if self.weights is None:
            return DiscretizedLogistic(mean, log_scale, self.num_bins)
        return DiscretizedMixture(mean, log_scale, self.weights if which is None else self.weights[:, which], self.num_bins)

    def lengths(self, offsets: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        """The exact code length of each step's symbols with these means, each step rescaled by its offset."""
        family = self.family(mean, self.log_scale + offsets[self.step_of])
        return torch.zeros_like(offsets).index_add_(0, self.step_of, code_length(family.ranges(self.symbols)[1]))

    def descend(self, best: torch.Tensor, mean: torch.Tensor, length: torch.Tensor, moves: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(offsets, lengths) after every step's own descent from ``best`` (whose lengths are
        ``length``), ties going to the smaller offset, then to the one found first."""
        for move in moves:
            for candidate in (best - move, best + move):
                inside = (candidate >= SCALE_OFFSET_RANGE.start) & (candidate < SCALE_OFFSET_RANGE.stop)
                trial = self.lengths(torch.where(inside, candidate, best), mean)
                better = inside & ((trial < length) | ((trial == length) & (candidate.abs() < best.abs())))
                best, length = torch.where(better, candidate, best), torch.where(better, trial, length)
        return best, length

    def blended(self, blends: Sequence[int]) -> torch.Tensor:
        """The means with each step's smooth-area blend applied (0: none)."""
        parsed = [smooth_blend(code) or (-1, 0) for code in blends]
        threshold, weight = torch.tensor(parsed, dtype=torch.int64, device=self.mean.device)[self.step_of].unbind(1)
        return blend_means(self.mean, self.prediction, threshold, weight)

    def choose_blends(self, offsets: torch.Tensor, length: torch.Tensor) -> list[int]:
        """Each step's blend among :data:`BLEND_CANDIDATES` that codes it shortest with ``offsets``
        (0, no blend, unless one is shorter than ``length``, the steps' unblended lengths). A
        candidate is measured on the symbols it moves only."""
        scaled = self.log_scale + offsets[self.step_of]
        unblended = code_length(self.family(self.mean, scaled).ranges(self.symbols)[1])
        blends, best = [0] * len(length), length
        for code in BLEND_CANDIDATES:
            threshold, weight = smooth_blend(code)
            moved = (self.prediction[1] <= threshold).nonzero()[:, 0]
            mean = blend_means(self.mean[..., moved], (self.prediction[0][moved], self.prediction[1][moved]), threshold, weight)
            lengths = code_length(self.family(mean, scaled[..., moved], moved).ranges(self.symbols[moved])[1])
            step_of = self.step_of[moved]
            trial = length.index_add(0, step_of, lengths).index_add_(0, step_of, unblended[moved], alpha=-1)
            for k in (trial < best).nonzero()[:, 0].tolist():
                blends[k] = code
            best = torch.minimum(trial, best)
        return blends


def _no_prediction(count: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A neighbour prediction that no blend uses (the spread of pixels without neighbours)."""
    return torch.zeros(count, dtype=torch.int64, device=device), torch.full((count,), UNUSABLE, dtype=torch.int64, device=device)


def _fill_padding(planes: Sequence[Plane], group: Group, x: torch.Tensor) -> torch.Tensor:
    """Rebuild the pad pixels of a group's decoded patches, segment by segment."""
    parts = x.split([b - a for _, a, b in group.segments])
    return torch.cat([planes[p].grid.fill_padding(part, a, b) for part, (p, a, b) in zip(parts, group.segments, strict=True)])


def decode_planes(
    coder: AnsCoder,
    planes: Sequence[Plane],
    plan: StreamPlan,
    batch: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    adjustments: Adjustments | None = None,
) -> None:
    """Decode into the (preallocated, uint8) ``plane.pixels`` tensors, in place, following ``plan``
    (and the models' step ``adjustments``, which the plan stores in the header's model order);
    ``batch`` patches per network call (default :func:`network_batch`); ``progress(done, total)``
    follows each group, in patches (the seed's aside)."""
    done, total = 0, sum(plan.group_sizes)
    for group in reversed(schedule(planes, plan)):
        padding = torch.cat([planes[p].grid.padding_mask(a, b, coder.device) for p, a, b in group.segments])
        context = _context(planes, group, padding, batch or network_batch(coder.device), plan.version, adjustments or {}, decoding=True)
        steps = METHODS[plan.method](context.model.config.latent_layers)
        x = decode_group(coder, context, steps).to(torch.uint8)
        for part, (p, a, b) in zip(x.split([b - a for _, a, b in group.segments]), group.segments, strict=True):
            planes[p].grid.insert(planes[p].pixels, part, a, b)
        coder.shrink(group.lanes_added)
        done += group.size
        if progress:
            progress(done, total)
    if coder.num_lanes:
        raise CorruptFileError("corrupt stream: lanes left after decoding")
    words = -(-plan.seed_length // 4)
    if coder.tail_length < words:
        raise CorruptFileError("corrupt stream: seed block missing")
    seed = coder.tail[coder.tail_length - words :].cpu().numpy().astype("<u4").tobytes()[: plan.seed_length]
    blocks = _seed_blocks(planes, plan.seed_patches)
    shapes = [tuple(planes[p].pixels[:, rows, cols].shape) for p, rows, cols in blocks]
    for (p, rows, cols), block in zip(blocks, decode_seed(seed, shapes)):
        planes[p].pixels[:, rows, cols] = torch.from_numpy(block).to(planes[p].pixels.device)
