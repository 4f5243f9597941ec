"""Architecture ``bitswap-polyphase``: Bit-Swap whose p(x | z1) has local pixel context.

The latent chain is the Bit-Swap VAE's (:mod:`.architecture`); only the
likelihood of the pixels changes. A 32x32 patch splits into its four 2x2
polyphase subimages A = (0, 0), B = (0, 1), C = (1, 0), D = (1, 1) (row and
column offsets), each 16x16 like z1. They are decoded in *passes* given by
the configuration's schedule (``"0|1|2|3"``: A, then B, C, D in turn;
``"03|12"``: a checkerboard, A and D, then B and C). Pass j is a network whose
input is z1 and every subimage of the passes before it, so a pixel is
predicted from its decoded neighbours on all sides, in a constant number of
passes per patch group (never a raster scan). Within a pixel, channels are
conditioned as in the base architecture (G on R, B on R and G).

With ``levels`` > 1 the first pass, which sees only z1, is itself split: A
(16x16) is decoded as *its* four 2x2 subimages by the same schedule, from z1
squeezed (space-to-depth) to their 8x8 size, and so on down, so only a
``4**-levels`` share of the pixels is predicted from the latents alone.
Passes are named by their place in that tree: ``pass.j`` at the top,
``pass.0.j`` inside A, ``pass.0.0.j`` inside A's A.

With ``mixture`` K > 1 each pixel is a mixture of K components, each a
logistic per channel conditioned as above (PixelCNN++ and L3C style): a pass
head gives K blocks of (mean, log-scale, coefficients) and K logits per
pixel. Channels are still decoded one at a time, each under the mixture
whose weights are the logits' softmax times what each component gave the
pixel's channels decoded before (exact integers:
:meth:`~.distributions.DiscretizedMixture.posterior_weights`).

Pad pixels of border patches (which cost nothing) enter the context as 0,
in the encoder and the decoder alike.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F

from .architecture import (
    ACT_MAX,
    COEF_FRAC,
    CONDITIONING_COEFS,
    PIXEL_BINS,
    SQUEEZE,
    ModelConfig,
    NetSpec,
    channel_mean,
    head_in_max,
    latents_to_input,
)
from .distributions import DiscretizedLogistic, DiscretizedMixture
from .errors import BitSwapError, CorruptFileError
from .fileformat import BLEND_WEIGHT_BITS, smooth_blend
from .fixedpoint import MEAN_FRAC, mixture_weights
from .integer_model import IntegerVAE, batched

ARCHITECTURE = "bitswap-polyphase"
PIXEL_CONTEXT_GAIN = 4
"""Decoded pixels enter a pass as ``4 * (2p - 255)``: the range of z1's inputs ``2k - (K - 1)``."""
SUBIMAGES = SQUEEZE**2
MAX_LEVELS = 4
"""A's subimages at level 4 are 2x2 pixels of a 32x32 patch."""
MAX_MIXTURE = 16
MAX_COEF_FRAC = 12


@dataclass(frozen=True)
class PolyphaseConfig(ModelConfig):
    """A Bit-Swap VAE configuration plus the pass schedule and the size of the pass networks."""

    schedule: str = "0|1|2|3"
    """Passes separated by ``|``, each the subimages (0 = A .. 3 = D) it decodes."""
    context_width: int = 48
    context_blocks: int = 2
    levels: int = 1
    """Polyphase levels: above 1, subimage A is decoded as its own subimages (module docstring)."""
    mixture: int = 1
    """Logistic components per pixel (module docstring)."""
    coef_frac: int = COEF_FRAC
    """Fractional bits of the channel-conditioning coefficients' codes: 12 instead of 8 keeps
    what rounding them cost (about 0.003 bits per subpixel), with no retraining."""

    omitted_at_default: ClassVar[tuple[str, ...]] = ModelConfig.omitted_at_default + ("levels", "mixture", "coef_frac")
    growable: ClassVar[tuple[str, ...]] = ModelConfig.growable + ("context_width", "context_blocks", "levels", "mixture", "coef_frac")

    def __post_init__(self) -> None:
        super().__post_init__()
        passes = [part for part in self.schedule.split("|")]
        flat = sorted(int(s) for part in passes for s in part if s.isdigit())
        if flat != list(range(SUBIMAGES)) or any(not part or not part.isdigit() for part in passes):
            raise BitSwapError(f"invalid model config field schedule={self.schedule!r}: passes of the subimages 0..3, e.g. '0|1|2|3'")
        if not 1 <= self.context_width <= 1024 or not 0 <= self.context_blocks <= 32:
            raise BitSwapError("invalid model config field context_width or context_blocks")
        if not 1 <= self.levels <= MAX_LEVELS or (self.levels > 1 and passes[0] != "0"):
            raise BitSwapError(f"invalid model config field levels={self.levels!r}: 1 to {MAX_LEVELS}, and above 1 "
                               "the schedule's first pass must be subimage A alone (e.g. '0|1|2|3')")
        if not 1 <= self.mixture <= MAX_MIXTURE:
            raise BitSwapError(f"invalid model config field mixture={self.mixture!r}: 1 to {MAX_MIXTURE}")
        if not COEF_FRAC <= self.coef_frac <= MAX_COEF_FRAC:
            raise BitSwapError(f"invalid model config field coef_frac={self.coef_frac!r}: {COEF_FRAC} to {MAX_COEF_FRAC}")

    @property
    def passes(self) -> tuple[tuple[int, ...], ...]:
        """The subimages each pass decodes, in decoding order."""
        return tuple(tuple(int(s) for s in part) for part in self.schedule.split("|"))


class Pass(NamedTuple):
    """One decoding pass: its network's name, its level and the subimages of that level it reads and decodes.

    The level-``depth`` image is the pixels ``x[..., ::2**depth, ::2**depth]`` (A of A of ...), and
    its conditioning is z1 squeezed by ``2**depth`` to the size of its subimages."""

    name: str
    depth: int
    earlier: tuple[int, ...]
    subimages: tuple[int, ...]


def pass_plan(config: PolyphaseConfig) -> list[Pass]:
    """The passes in decoding order: at each level, a first pass of A alone recurses into A's subimages
    while levels remain, and every other pass is a network."""
    plan: list[Pass] = []

    def level(prefix: str, depth: int) -> None:
        earlier: tuple[int, ...] = ()
        for j, subimages in enumerate(config.passes):
            if j == 0 and depth + 1 < config.levels:
                level(f"{prefix}0.", depth + 1)
            else:
                plan.append(Pass(f"{prefix}{j}", depth, earlier, subimages))
            earlier += subimages

    level("pass.", 0)
    return plan


def pass_specs(config: PolyphaseConfig) -> list[NetSpec]:
    """The network of each pass of :func:`pass_plan`: z1 (squeezed to the pass's level) and the
    level's earlier subimages in, (mean, log-scale) codes of each subpixel of the pass's subimages
    out (plus the channel-conditioning coefficients), for each mixture component (plus the
    mixture's logits)."""
    k = config.mixture
    return [
        NetSpec(
            in_channels=config.latent_channels * SUBIMAGES**p.depth + config.channels * len(p.earlier),
            out_channels=config.channels * len(p.subimages) * k,
            in_max=config.latent_bins - 1,
            in_step=config.delta / 2,
            first_kernel=3,
            num_bins=PIXEL_BINS,
            bins_per_unit=ACT_MAX / 2,
            pixel_output=False,
            coef_channels=CONDITIONING_COEFS * len(p.subimages) * k if config.channel_conditioning else 0,
            logit_channels=len(p.subimages) * k if k > 1 else 0,
            head_in_max=head_in_max(config),
            coef_frac=config.coef_frac,
        )
        for p in pass_plan(config)
    ]


def subimage(x: torch.Tensor, s: int, depth: int = 0) -> torch.Tensor:
    """Subimage ``s`` of the level-``depth`` image of pixels (N, C, H, W): a (N, C, H/2**(depth+1), W/2**(depth+1)) view."""
    rows, cols = pixel_slices(s, depth)
    return x[:, :, rows, cols]


def pixel_slices(s: int, depth: int = 0) -> tuple[slice, slice]:
    """(rows, columns) of the pixels of subimage ``s`` of the level-``depth`` image."""
    step = SQUEEZE << depth
    return slice((s // SQUEEZE) << depth, None, step), slice((s % SQUEEZE) << depth, None, step)


def pass_input(z1_input: torch.Tensor, x: torch.Tensor, p: Pass) -> torch.Tensor:
    """A pass's integer input: z1 (as ``2k - (K - 1)``) squeezed to the pass's level, then that
    level's earlier subimages of ``x``."""
    cond = F.pixel_unshuffle(z1_input, 1 << p.depth) if p.depth else z1_input
    parts = [cond] + [PIXEL_CONTEXT_GAIN * (2 * subimage(x, s, p.depth) - ACT_MAX) for s in p.earlier]
    return torch.cat(parts, 1)


def split_pass(codes: tuple[torch.Tensor, ...], m: int) -> list[tuple[torch.Tensor, ...]]:
    """A pass head's clamped codes, per subimage of the pass: (mean, log-scale[, coefficients][,
    logits]), means and log-scales (N, KC, h, w), coefficients (N, 3K, h, w), logits (N, K, h, w)
    for K mixture components. Head channel ``(k * C + c) * m + i`` is channel c of component k of
    the pass's i-th subimage, coefficient ``(k * 3 + j) * m + i`` its j-th coefficient, logit
    ``k * m + i`` its component k's."""
    n, _, h, w = codes[0].shape
    per_part = [t.reshape(n, -1, m, h, w) for t in codes]
    return [tuple(t[:, :, i] for t in per_part) for i in range(m)]


def _steps_per_subimage(config: PolyphaseConfig) -> int:
    """Likelihood steps per subimage: one per channel with channel conditioning or a mixture, else one."""
    return config.channels if config.channel_conditioning or config.mixture > 1 else 1


UNUSABLE = 1 << 16
"""The spread of a pixel with fewer than two decoded neighbours: above every blend threshold."""
_DIRECTIONS = ((-1, 0), (1, 0), (0, -1), (0, 1))


def neighbour_prediction(x: torch.Tensor, known: torch.Tensor | None, p: Pass, s: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(mean code, spread) of each pixel of subimage ``s`` of pass ``p``, (N, C, h, w) int64: the
    average of its up, down, left and right neighbours in the pass's level image that earlier
    passes decoded (inside the patch, not padding), and their largest minus smallest value
    (``UNUSABLE`` where fewer than two are decoded); None where no neighbour's subimage comes
    before ``s``. What a smooth-area blend moves means to."""
    row, col = s // SQUEEZE, s % SQUEEZE
    decoded = [(dy, dx) for dy, dx in _DIRECTIONS if ((row + dy) % SQUEEZE) * SQUEEZE + (col + dx) % SQUEEZE in p.earlier]
    if not decoded:
        return None
    level = x[..., :: 1 << p.depth, :: 1 << p.depth]
    usable = torch.ones_like(level, dtype=torch.bool) if known is None else ~known[..., :: 1 << p.depth, :: 1 << p.depth]
    level, usable = F.pad(level, (1, 1, 1, 1)), F.pad(usable, (1, 1, 1, 1), value=False)
    h, w = x.shape[-2] >> (p.depth + 1), x.shape[-1] >> (p.depth + 1)
    where = [(slice(1 + row + dy, 1 + row + dy + 2 * h, 2), slice(1 + col + dx, 1 + col + dx + 2 * w, 2)) for dy, dx in decoded]
    value = [level[..., rows, cols] for rows, cols in where]
    there = [usable[..., rows, cols] for rows, cols in where]

    def over_neighbours(combine: Callable, outside: int) -> torch.Tensor:  # elementwise: torch reduces a short dim 0 slowly
        return functools.reduce(combine, (torch.where(t, v, outside) for t, v in zip(there, value)))

    count = functools.reduce(torch.add, (t.to(torch.int64) for t in there))
    total, high, low = over_neighbours(torch.add, 0), over_neighbours(torch.maximum, -1), over_neighbours(torch.minimum, PIXEL_BINS)
    mean = torch.div(total << MEAN_FRAC, count.clamp(min=1), rounding_mode="floor")
    return mean, torch.where(count >= 2, high - low, UNUSABLE)


def blend_means(mean: torch.Tensor, prediction: tuple[torch.Tensor, torch.Tensor], threshold: int | torch.Tensor,
                weight: int | torch.Tensor) -> torch.Tensor:
    """``mean`` codes moved ``weight / 16`` of the way toward the neighbour ``prediction`` (target
    and spread, flattened as ``mean``) where the spread is at most ``threshold``: a smooth-area
    blend (:func:`~.fileformat.smooth_blend`; tensors give each symbol its own). Exact integers."""
    target, spread = prediction
    moved = mean + (((target - mean) * weight) >> BLEND_WEIGHT_BITS)
    return torch.where(spread <= threshold, moved, mean)


class PolyphaseLikelihood:
    """p(x | z1) decoded pass by pass; the pass networks run as :meth:`steps` gets to them."""

    def __init__(self, model: PolyphaseVAE, z1: torch.Tensor, known: torch.Tensor | None, batch: int | None) -> None:
        self.model, self.batch = model, batch
        config = model.config
        self.z1_input = latents_to_input(z1, config.latent_bins)
        n, _, h, w = z1.shape
        self.shape = (n, config.channels, SQUEEZE * h, SQUEEZE * w)
        self.known = None if known is None else known.expand(self.shape)

    def steps(self, x: torch.Tensor, blends: Sequence[int] = ()) -> Iterator[tuple[tuple, DiscretizedLogistic | DiscretizedMixture]]:
        """(index into x, entropy model) pairs in decoding order: per pass, per subimage, per
        channel (all channels at once without conditioning). A pass's network reads only the
        subimages of earlier passes, so a decoder fills ``x[index]`` before asking for the next.
        ``blends`` (one byte per step, or none) moves means toward :func:`neighbour_prediction`."""
        for k, (index, family, prediction) in enumerate(self.predicted_steps(x, blends)):
            if blends and blends[k]:
                if prediction is None:
                    raise CorruptFileError(f"corrupt stream: a smooth-area blend for step {k}, which has no decoded neighbours")
                family = family.with_mean(blend_means(family.mean, prediction, *smooth_blend(blends[k])))
            yield index, family

    def predicted_steps(self, x: torch.Tensor, blends: Sequence[int] | None = None) -> Iterator[tuple[tuple, DiscretizedLogistic | DiscretizedMixture, tuple | None]]:
        """:meth:`steps` unblended, each with its pixels' :func:`neighbour_prediction` flattened as
        the family: None where they have no decoded neighbours (as in the first pass), and, given
        the steps' ``blends``, where no step of the subimage has one (none is needed)."""
        config = self.model.config
        everything = slice(None)
        per_subimage = _steps_per_subimage(config)
        k = 0
        for p in pass_plan(config):
            context = x if self.known is None else x.masked_fill(self.known, 0)
            inp = pass_input(self.z1_input, context, p)
            codes = batched(functools.partial(self.model.pass_codes, p.name), inp, self.batch)
            for s, subimage_codes in zip(p.subimages, split_pass(codes, len(p.subimages))):
                known = None if self.known is None else subimage(self.known, s, p.depth)
                rows, cols = pixel_slices(s, p.depth)
                needed = blends is None or any(blends[k : k + per_subimage])
                prediction = neighbour_prediction(x, self.known, p, s) if needed else None
                k += per_subimage
                if per_subimage == 1 and config.mixture == 1:
                    flat = None if prediction is None else tuple(t.reshape(-1) for t in prediction)
                    family = DiscretizedLogistic(*subimage_codes[:2], PIXEL_BINS, known)
                    yield (everything, everything, rows, cols), family, flat
                    continue
                pixels = subimage(x, s, p.depth)
                for c, family in enumerate(self._channel_families(subimage_codes, pixels, known)):
                    flat = None if prediction is None else tuple(t[:, c].reshape(-1) for t in prediction)
                    yield (everything, slice(c, c + 1), rows, cols), family, flat

    def _channel_families(self, codes: tuple[torch.Tensor, ...], pixels: torch.Tensor,
                          known: torch.Tensor | None) -> Iterator[DiscretizedLogistic | DiscretizedMixture]:
        """One subimage's entropy models channel by channel, each made when the channels before it
        are in ``pixels``: a logistic per subpixel, or with a mixture one whose weights follow
        the channels decoded before."""
        config = self.model.config
        k = config.mixture
        mean, log_scale, *rest = codes
        coefs = rest[0] if config.channel_conditioning else None
        if k > 1:
            def by_component(t: torch.Tensor) -> torch.Tensor:  # (N, K*X, h, w) -> (K*N, X, h, w)
                return t.unflatten(1, (k, -1)).transpose(0, 1).flatten(0, 1)

            mean, log_scale = by_component(mean), by_component(log_scale)
            coefs = None if coefs is None else by_component(coefs)
            weights = mixture_weights(rest[-1].transpose(0, 1).reshape(k, -1))
        for c in range(config.channels):
            known_c = None if known is None else known[:, c]
            if k == 1:
                yield DiscretizedLogistic(channel_mean(mean, coefs, pixels, c, exact=True, coef_frac=config.coef_frac), log_scale[:, c], PIXEL_BINS, known_c)
                continue
            mean_c = channel_mean(mean, coefs, pixels.repeat(k, 1, 1, 1), c, exact=True, coef_frac=config.coef_frac).reshape(k, -1)
            family = DiscretizedMixture(mean_c, log_scale[:, c].reshape(k, -1), weights, PIXEL_BINS, known_c)
            yield family
            if c + 1 < config.channels:
                weights = family.posterior_weights(pixels[:, c])


class PolyphaseVAE(IntegerVAE):
    """The integer model of architecture ``bitswap-polyphase``: the base VAE's networks but p(x | z1),
    plus one network per pass (named as in :func:`pass_plan`)."""

    architecture = ARCHITECTURE
    pixel_context = True
    config_type = PolyphaseConfig
    likelihood_type = PolyphaseLikelihood

    @classmethod
    def network_specs(cls, config: PolyphaseConfig) -> dict[str, tuple[NetSpec, int, int]]:
        specs = super().network_specs(config)
        del specs["p.0"]
        for p, spec in zip(pass_plan(config), pass_specs(config)):
            specs[p.name] = (spec, config.context_width, config.context_blocks)
        return specs

    @property
    def likelihood_steps(self) -> int:
        return _steps_per_subimage(self.config) * sum(len(p.subimages) for p in pass_plan(self.config))

    def pass_codes(self, name: str, inp: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Clamped codes of the pass network ``name`` for its integer input (:func:`pass_input`)."""
        return self._nets[name](inp)

    def prior_codes(self, level: int, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if level == 0:
            raise ValueError("p(x | z1) of a polyphase model needs the decoded pixels: use likelihood()")
        return super().prior_codes(level, z)

    def likelihood(self, z1: torch.Tensor, known: torch.Tensor | None = None, batch: int | None = None) -> PolyphaseLikelihood:
        return PolyphaseLikelihood(self, z1, known, batch)
