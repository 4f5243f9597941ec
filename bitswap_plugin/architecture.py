"""The Bit-Swap VAE architecture: what the float (training) and integer (coding) models share.

Architecture id ``bitswap-vae``: the Markov chain x -> z1 -> ... -> zL of
Bit-Swap (Kingma, Abbeel, Ho 2019), scaled down:

* x (C x 32 x 32) is space-to-depth squeezed to 4C x 16 x 16; every latent
  layer is ``latent_channels`` x 16 x 16. All networks are fully
  convolutional with zero 'same' padding.
* every network is conv_in -> pre-activation ResNet blocks -> qrelu -> head
  conv (:class:`NetSpec` describes each), and its head gives, per output
  element, a mean and a log-scale *code* in bin coordinates (see
  :mod:`bitswap_plugin.fixedpoint`).
* network inputs are odd integers: a pixel p enters as ``2p - 255``, a latent
  bin k as ``2k - (K - 1)``.
* the likelihood p(x | z1) is a discretized logistic per subpixel, optionally
  with channel conditioning (G's mean shifted by a·R, B's by b·R + c·G):
  :class:`ChannelConditionedLogistic`. The top prior is a standard logistic.

This module holds the configuration, the network geometry, the head layout
and the likelihood's parameterisation. The training module
(:mod:`bitswap_plugin.model`) and the integer model
(:mod:`bitswap_plugin.integer_model`) both build on it; decoding never
imports training code.
"""

from __future__ import annotations

import dataclasses
import decimal
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F

from .distributions import DiscretizedLogistic, SharedLogistic
from .errors import BitSwapError
from .fileformat import PATCH
from .fixedpoint import LOG_SCALE_FRAC, LOG_SCALE_MAX, LOG_SCALE_MIN, LOGIT_MAX, MEAN_FRAC

ARCHITECTURE = "bitswap-vae"
"""The id model files of this architecture carry (files without one are this architecture)."""
PIXEL_BINS = 256
ACT_MAX = 255
"""Activations after qrelu are integers in [0, ACT_MAX]."""
MULT_BITS = 20
"""Requantization multipliers of a layer lie below 2**MULT_BITS (the largest at or above half of it)."""
MAX_SHIFT = 48
"""Largest requantization shift."""
CONDITIONING_COEFS = 3
"""Per pixel: G += a*R; B += b*R + c*G (R, G centred, in bins)."""
COEF_FRAC = 8
"""Conditioning coefficients are codes with this many fractional bits (a polyphase model's
``coef_frac`` may give more), clamped to |coef| <= 2."""
SQUEEZE = 2
"""Space-to-depth factor from pixels to the first latent layer."""
_JSON_TYPES = {"int": int, "str": str, "bool": bool}
"""Configuration field annotations and the JSON value types they take."""


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of a Bit-Swap model (JSON-serialisable)."""

    channels: int = 3
    latent_channels: int = 8
    latent_layers: int = 2
    width: int = 64
    res_blocks: int = 2
    latent_bins: int = 1024
    latent_step_bits: int = 6
    channel_conditioning: bool = False
    """p(x|z1) conditions G on R and B on R, G within each pixel (RGB only): three parallel decode steps."""
    name: str = "bitswap"
    head_input_bits: int = 8
    """Bits of the activations every network's head reads: above 8, the rounding that costs the most
    (those activations' 8 bits) shrinks while the head's weights keep their precision."""
    upper_width: int = 0
    """Width of the networks above z1, q(z_{i+1} | z_i) and p(z_i | z_{i+1}) for i >= 1 (0: ``width``).
    They only shape the latents' KL, so they can be leaner than q(z1 | x), whose z1 the pixels'
    networks read."""
    upper_blocks: int = -1
    """Residual blocks of the networks above z1 (-1: ``res_blocks``)."""

    omitted_at_default: ClassVar[tuple[str, ...]] = ("head_input_bits", "upper_width", "upper_blocks")
    """Fields :meth:`to_json` leaves out when they hold their default."""
    growable: ClassVar[tuple[str, ...]] = ("head_input_bits", "width", "res_blocks", "upper_width", "upper_blocks", "latent_channels")
    """Fields in which a model may differ from the trained weights it starts from: wider or deeper
    networks start as the trained ones (new channels and blocks add nothing yet), fewer latent
    channels keep the trained ones that carry the most, and other networks whose shapes change
    start fresh (e.g. narrower latent networks beside trained pixel passes); the quantizers are
    calibrated anew anyway."""

    def __post_init__(self) -> None:
        checks = {
            "channels": self.channels in (1, 3),
            "latent_channels": 1 <= self.latent_channels <= 256,
            "latent_layers": 1 <= self.latent_layers <= 8,
            "width": 1 <= self.width <= 1024,
            "res_blocks": 0 <= self.res_blocks <= 32,
            "latent_bins": 2 <= self.latent_bins <= 1 << 16 and self.latent_bins % 2 == 0,
            "latent_step_bits": 0 <= self.latent_step_bits <= 16,
            "channel_conditioning": not self.channel_conditioning or self.channels == 3,
            "name": isinstance(self.name, str) and 0 < len(self.name) <= 64,
            "head_input_bits": 8 <= self.head_input_bits <= 12,
            "upper_width": 0 <= self.upper_width <= 1024,
            "upper_blocks": -1 <= self.upper_blocks <= 32,
        }
        for field, ok in checks.items():
            if not ok:
                raise BitSwapError(f"invalid model config field {field}={getattr(self, field)!r}")

    def net_size(self, level: int) -> tuple[int, int]:
        """(width, residual blocks) of the networks q(z_{level+1} | z_level) and p(z_level | z_{level+1})."""
        if level == 0:
            return self.width, self.res_blocks
        return self.upper_width or self.width, self.res_blocks if self.upper_blocks < 0 else self.upper_blocks

    @property
    def latent_side(self) -> int:
        """Side of a latent layer for one patch."""
        return PATCH // SQUEEZE

    def latent_shape(self, patches: int) -> tuple[int, int, int, int]:
        """Shape of one latent layer of ``patches`` patches."""
        return (patches, self.latent_channels, self.latent_side, self.latent_side)

    @property
    def latents_per_patch(self) -> int:
        """Latent symbols of one patch over all layers."""
        return self.latent_layers * self.latent_channels * self.latent_side**2

    @property
    def delta(self) -> float:
        """Latent bin width in value units."""
        return 2.0 ** -self.latent_step_bits

    def to_json(self) -> str:
        """Every field, but those of :attr:`omitted_at_default` that hold their default (so adding
        a field to an architecture keeps its earlier files' JSON, and their content hashes)."""
        data = dataclasses.asdict(self)
        for field in dataclasses.fields(self):
            if field.name in self.omitted_at_default and data[field.name] == field.default:
                del data[field.name]
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        try:
            data = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise BitSwapError(f"model config is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise BitSwapError("model config must be a JSON object")
        fields = {f.name: f.type for f in dataclasses.fields(cls)}
        unknown = set(data) - set(fields)
        if unknown:
            raise BitSwapError(f"unknown model config fields: {sorted(unknown)}")
        for key, value in data.items():
            wanted = _JSON_TYPES[fields[key]]
            if type(value) is not wanted:
                raise BitSwapError(f"model config field {key} must be {wanted.__name__}")
        return cls(**data)


def top_prior_codes(config: ModelConfig) -> tuple[int, int]:
    """(mean, log-scale) codes of the standard logistic top prior, computed without float math."""
    mean = (config.latent_bins - 1) << (MEAN_FRAC - 1)
    ctx = decimal.Context(prec=40)
    log_scale = ctx.multiply(ctx.ln(decimal.Decimal(2)), config.latent_step_bits << LOG_SCALE_FRAC)
    return mean, int(log_scale.to_integral_value(decimal.ROUND_HALF_EVEN))


def mean_code_range(num_bins: int) -> tuple[int, int]:
    """Mean codes are clamped to [-1, num_bins] bins."""
    return -(1 << MEAN_FRAC), num_bins << MEAN_FRAC


class NetSpec(NamedTuple):
    """Static description of one network of the chain."""

    in_channels: int
    out_channels: int
    in_max: int
    """Largest |integer input|."""
    in_step: float
    """Value units per integer input unit."""
    first_kernel: int
    num_bins: int
    """Output bins: 256 for pixels, K for latents."""
    bins_per_unit: float
    """Output bins per value unit: 127.5 for pixels (values in [-1, 1]), 1/delta for latents."""
    pixel_output: bool
    coef_channels: int = 0
    """Extra head outputs: channel-conditioning coefficients (squeezed) of p(x|z1)."""
    logit_channels: int = 0
    """Extra head outputs after the coefficients: mixture logits (codes of :data:`~.fixedpoint.LOGIT_FRAC`)."""
    head_in_max: int = ACT_MAX
    """Largest activation the head reads (``2**head_input_bits - 1``): its weights are budgeted for
    8-bit inputs, and wider ones are convolved in 8-bit digits (:func:`~bitswap_plugin.fixedpoint.exact_conv2d`)."""
    coef_frac: int = COEF_FRAC
    """Fractional bits of the coefficient codes."""


def net_specs(config: ModelConfig) -> tuple[list[NetSpec], list[NetSpec]]:
    """Specs of the posterior nets q(z1|x), q(z_{i+1}|z_i) and prior nets p(x|z1), p(z_i|z_{i+1})."""
    c4, zc, k = SQUEEZE**2 * config.channels, config.latent_channels, config.latent_bins
    lat_in, lat_unit = config.delta / 2, 1.0 / config.delta
    head = head_in_max(config)
    q = [NetSpec(c4, zc, ACT_MAX, 1.0 / ACT_MAX, 5, k, lat_unit, False, head_in_max=head)]
    coefs = SQUEEZE**2 * CONDITIONING_COEFS if config.channel_conditioning else 0
    p = [NetSpec(zc, c4, k - 1, lat_in, 3, PIXEL_BINS, ACT_MAX / 2, True, coefs, head_in_max=head)]
    for _ in range(config.latent_layers - 1):
        q.append(NetSpec(zc, zc, k - 1, lat_in, 3, k, lat_unit, False, head_in_max=head))
        p.append(NetSpec(zc, zc, k - 1, lat_in, 3, k, lat_unit, False, head_in_max=head))
    return q, p


def head_in_max(config: ModelConfig) -> int:
    """Largest activation a network's head reads."""
    return (1 << config.head_input_bits) - 1


def pixels_to_input(x: torch.Tensor) -> torch.Tensor:
    """Pixels (N, C, H, W) in 0..255 -> squeezed odd integers 2p - 255, (N, 4C, H/2, W/2)."""
    return 2 * F.pixel_unshuffle(x, SQUEEZE) - ACT_MAX


def latents_to_input(z: torch.Tensor, num_bins: int) -> torch.Tensor:
    """Latent bins k -> odd integers 2k - (K - 1)."""
    return 2 * z - (num_bins - 1)


def straight_through(x: torch.Tensor, quantized: torch.Tensor) -> torch.Tensor:
    """Value of ``quantized``, gradient of ``x``. Exact when ``quantized`` is x rounded to an integer."""
    return x + (quantized - x).detach()


def split_head(codes: torch.Tensor, spec: NetSpec) -> tuple[torch.Tensor, ...]:
    """Head output -> clamped (mean, log-scale[, coefficients][, logits]) codes, at pixel resolution for p(x|z1)."""
    n, coefs = spec.out_channels, 2 * spec.out_channels + spec.coef_channels
    mean = codes[:, :n].clamp(*mean_code_range(spec.num_bins))
    log_scale = codes[:, n : 2 * n].clamp(LOG_SCALE_MIN, LOG_SCALE_MAX)
    parts = [mean, log_scale]
    if spec.coef_channels:
        parts.append(codes[:, 2 * n : coefs].clamp(-coef_max(spec.coef_frac), coef_max(spec.coef_frac)))
    if spec.logit_channels:
        parts.append(codes[:, coefs:].clamp(-LOGIT_MAX, LOGIT_MAX))
    if spec.pixel_output:
        parts = [F.pixel_shuffle(t, SQUEEZE) for t in parts]
    return tuple(parts)


def coef_max(coef_frac: int) -> int:
    """Largest |coefficient code| (a coefficient of 2) at ``coef_frac`` fractional bits."""
    return 2 << coef_frac


def channel_mean(
    mean: torch.Tensor, coefs: torch.Tensor | None, x: torch.Tensor, channel: int, exact: bool, coef_frac: int = COEF_FRAC
) -> torch.Tensor:
    """Mean code of pixel ``channel`` given the pixels of the channels before it, (N, H, W).

    ``mean`` and ``coefs`` are p(x|z1)'s codes (N, C, H, W) and (N, 3, H, W)
    (``coefs`` None: no conditioning) with ``coef_frac`` fractional bits;
    only ``x[:, :channel]`` is read. With ``exact`` the shift is floored, as
    the integer model does.
    """
    if coefs is None or channel == 0:
        return mean[:, channel]
    centred = 2 * x[:, :channel] - ACT_MAX
    used = coefs[:, :1] if channel == 1 else coefs[:, 1:]
    shift = (used * centred).sum(1)
    divisor = 1 << (coef_frac + 1 - MEAN_FRAC)  # centred pixels are in half bins
    if not shift.is_floating_point():
        shift = torch.div(shift, divisor, rounding_mode="floor")
    else:
        shift = shift / divisor  # exact: the divisor is a power of two
        shift = straight_through(shift, torch.floor(shift)) if exact else shift
    return (mean[:, channel] + shift).clamp(*mean_code_range(PIXEL_BINS))


def conditioned_mean(
    mean: torch.Tensor, coefs: torch.Tensor | None, x: torch.Tensor, exact: bool, coef_frac: int = COEF_FRAC
) -> torch.Tensor:
    """Mean codes of all pixel channels given ``x`` itself (encoder side and training)."""
    if coefs is None:
        return mean
    return torch.stack([channel_mean(mean, coefs, x, c, exact, coef_frac) for c in range(mean.shape[1])], 1)


class ChannelConditionedLogistic:
    """The likelihood p(x | z1): a discretized logistic per subpixel, channels optionally conditioned.

    Built from the p(x | z1) network's codes (:func:`split_head`): (mean,
    log-scale[, coefficients]), at pixel resolution. :meth:`steps` gives the
    entropy models in decoding order. ``known`` marks padding (see
    :class:`~bitswap_plugin.distributions.DiscretizedLogistic`).
    """

    def __init__(self, codes: tuple[torch.Tensor, ...], known: torch.Tensor | None = None) -> None:
        self.mean, self.log_scale, *coefs = codes
        self.coefs = coefs[0] if coefs else None
        self.known = None if known is None else known.expand(self.mean.shape)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the pixels it describes, (N, C, H, W)."""
        return tuple(self.mean.shape)

    def steps(self, x: torch.Tensor) -> Iterator[tuple[tuple[slice, ...], DiscretizedLogistic]]:
        """(index into ``x``, entropy model) pairs in decoding order.

        Without channel conditioning there is one model for all channels; with
        it, one per channel, each built only when the generator is advanced,
        from the channels of ``x`` before it, so a decoder fills ``x[index]``
        before asking for the next.
        """
        if self.coefs is None:
            yield (slice(None),), DiscretizedLogistic(self.mean, self.log_scale, PIXEL_BINS, self.known)
            return
        for c in range(self.mean.shape[1]):
            known = None if self.known is None else self.known[:, c]
            mean = channel_mean(self.mean, self.coefs, x, c, exact=True)
            yield (slice(None), slice(c, c + 1)), DiscretizedLogistic(mean, self.log_scale[:, c], PIXEL_BINS, known)


def top_prior(config: ModelConfig, count: int, device: torch.device | str = "cpu") -> SharedLogistic:
    """The top prior p(z_L) of ``count`` latent symbols: one shared standard logistic."""
    return SharedLogistic(*top_prior_codes(config), config.latent_bins, count, device)
