"""Training only: the float Bit-Swap VAE, its quantization-aware mode, loss and export.

The architecture (configuration, network geometry, heads, likelihood) is
:mod:`bitswap_plugin.architecture`; this module builds the trainable float
networks on it, so that they convert exactly to the integer networks of
:mod:`bitswap_plugin.integer_model` (:func:`export_integer_model`). Every
network is conv_in -> pre-activation ResNet blocks
``h = h + conv2(qrelu(conv1(qrelu(h))))`` -> qrelu -> head conv.

Two forward modes share the parameters:

* float mode (``quantized = False``): an ordinary float network on continuous
  latents; the loss is the negative ELBO with continuous logistic latents and a
  single reparameterised sample.
* quantized mode (quantization-aware training, after :meth:`BitSwapVAE.calibrate`):
  every layer computes, in floats that hold integers exactly, the same integer
  arithmetic the integer model performs (weights rounded per output channel,
  integer bias, multiplier and shift, floor, clamp to [0, 255]), with
  straight-through gradients. Latents are rounded to their bins and the latent
  terms of the loss are discretized-logistic bin masses, i.e. the code length
  the bits-back coder achieves. The exported integer model therefore reproduces
  the quantized mode's codes exactly.
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple

import safetensors
import torch
import torch.nn.functional as F
from torch import nn

from .architecture import (
    ACT_MAX,
    ARCHITECTURE,
    MAX_SHIFT,
    MULT_BITS,
    PIXEL_BINS,
    ModelConfig,
    NetSpec,
    conditioned_mean,
    latents_to_input,
    net_specs,
    pixels_to_input,
    split_head,
    straight_through,
    top_prior_codes,
)
from .errors import BitSwapError
from .fixedpoint import FLOAT32_EXACT_LIMIT, LOG_SCALE_FRAC, LOGIT_FRAC, MEAN_FRAC, by_digits
from .integer_model import IntegerBlock, IntegerConv, IntegerNet, IntegerVAE, Requantizer, safetensors_bytes

WEIGHT_MAX = 2047
"""Weights are at most 12-bit signed integers (fewer where the conv bound requires)."""
RESIDUAL_HEADROOM = 16.0
"""The residual stream's step is the finest activation step reading it divided by this."""
CALIBRATION_QUANTILE = 0.99995
"""Activation clip = this quantile of a qrelu site's input on the calibration batch. Measured on the
validation crops (polyphase-rgb-l3-mix3-2's weights, 12-bit head inputs): 0.9999 3.1840, 0.99995 3.1803,
0.99999 3.1809 bits per subpixel, the float model 3.1710; 0.999 clips far too much (3.42 at 10 bits)."""
_BIAS_LIMIT = float(1 << 24)
"""With |acc| < 2**24 * 4095 / 255 (weights budgeted for 8-bit inputs, read by a head with up to 12-bit
inputs), |bias| <= 2**24 + half an output step, multipliers < 2**MULT_BITS and shifts <= MAX_SHIFT,
(acc + bias) * multiplier stays below 2**53: float64 emulates it exactly."""
LN2 = math.log(2.0)


# ----------------------------------------------------------------------------
# Straight-through quantizers (values are exact integers held in floats).


def _pow2(exp: int) -> float:
    return math.ldexp(1.0, exp)


class Requant(NamedTuple):
    """Integer requantization floor((acc + bias) * multiplier / 2**shift), per output channel."""

    bias: torch.Tensor
    multiplier: torch.Tensor
    shift: int


def requant_params(ratio: torch.Tensor, bias_acc: torch.Tensor) -> Requant:
    """Integer requantization for ``out = round((acc + bias_acc) * ratio)``, per channel.

    ``ratio`` (> 0, float64, no gradient) and ``bias_acc`` (float64) are
    per-channel. The shift is chosen per layer so that the largest multiplier
    has :data:`MULT_BITS` bits; half an output step joins the bias so that the
    final floor rounds to nearest. The bias is rounded straight-through.
    """
    shift = MULT_BITS - 1 - math.floor(math.log2(float(ratio.max())))
    if not 0 <= shift <= MAX_SHIFT:
        raise BitSwapError(f"requantization ratio {float(ratio.max())} out of range")
    multiplier = torch.round(ratio * _pow2(shift))
    biased = bias_acc + 0.5 / ratio
    bias = torch.where(multiplier > 0, torch.round(biased), 0.0)  # a zero multiplier makes the bias moot
    return Requant(straight_through(biased, bias), multiplier, shift)


def _apply_requant(acc: torch.Tensor, rq: Requant) -> torch.Tensor:
    """Float64 emulation of :func:`fixedpoint.requantize` (exact while |acc + bias| * multiplier < 2**53)."""
    view = (1, -1, 1, 1)
    bias, multiplier = rq.bias.to(acc.device), rq.multiplier.to(acc.device)
    y = (acc.double() + bias.view(view)) * (multiplier.view(view) * _pow2(-rq.shift))
    return straight_through(y, torch.floor(y))


class QConv(nn.Module):
    """Same-padded conv whose quantized form has per-output-channel integer weights.

    The weight step of each output channel is the finest one that keeps
    ``|w_int| <= WEIGHT_MAX``, ``sum|w_int| * in_max < 2**24`` (so the integer
    convolution is exact in float32), the integer bias within 2**24 and the
    layer's shift within :data:`MAX_SHIFT`.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, in_max: int, zero_init: bool = False) -> None:
        super().__init__()
        weights = in_channels * kernel * kernel
        self.budget = (FLOAT32_EXACT_LIMIT - 1) // in_max - weights
        """Most sum of |integer weights| per output that keeps the float32 convolution exact (with rounding headroom)."""
        if self.budget < weights:
            raise BitSwapError(f"a convolution of {weights} weights per output on inputs up to {in_max} cannot be exact "
                               "in float32 with integer weights of 1 or more: use fewer inputs (latent channels, levels)")
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2)
        self.in_max = in_max
        if zero_init:
            nn.init.zeros_(self.conv.weight)
            nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)

    def weight_step(
        self, in_step: float, out_step: torch.Tensor, out_offset: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Float64 weights, bias (with ``out_offset`` folded in) and the step of each output channel's integer weights."""
        w = self.conv.weight.double()
        b = self.conv.bias.double()
        out_step = out_step.double().expand(w.shape[0])
        if out_offset is not None:
            b = b + out_offset.double() * out_step
        wd, bd = w.detach(), b.detach()
        step = torch.stack(
            [
                wd.abs().amax((1, 2, 3)) / WEIGHT_MAX,
                wd.abs().sum((1, 2, 3)) / self.budget,
                bd.abs() / (in_step * _BIAS_LIMIT),
                out_step.detach() * _pow2(MULT_BITS - MAX_SHIFT) / in_step,  # keeps the shift in range
            ]
        ).amax(0)
        return w, b, step

    def quant_params(
        self, in_step: float, out_step: torch.Tensor, out_offset: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, Requant]:
        """Integer weights (float32, straight-through) and requantization.

        The quantized layer maps integer inputs (value = int * ``in_step``) to
        ``round(conv_value / out_step + out_offset)`` per output channel.
        """
        w, b, step = self.weight_step(in_step, out_step, out_offset)
        w_scaled = w / step.view(-1, 1, 1, 1)
        w_int = straight_through(w_scaled, torch.round(w_scaled)).float()
        acc_step = in_step * step
        return w_int, requant_params(acc_step / out_step.detach(), b / acc_step)

    def forward_quantized(
        self,
        x: torch.Tensor,
        in_step: float,
        out_step: torch.Tensor,
        out_offset: torch.Tensor | None = None,
        in_max: int | None = None,
    ) -> torch.Tensor:
        """Integer-exact forward on integer inputs up to ``in_max`` (default: what the weights are
        budgeted for); returns float64 integers."""
        w_int, rq = self.quant_params(in_step, out_step, out_offset)
        acc = F.conv2d(x.float(), w_int, padding=self.conv.padding)
        if in_max is not None and in_max > self.in_max:  # float32 may round: the exact sum, by 8-bit digits
            exact = by_digits(x.detach(), lambda digits: F.conv2d(digits.float(), w_int.detach(), padding=self.conv.padding))
            acc = straight_through(acc.double(), exact)
        return _apply_requant(acc, rq)


def qrelu_params(in_step: float, act_step: float) -> Requant:
    """Requantization from the residual stream (step ``in_step``) to qrelu activations."""
    ratio = torch.tensor([in_step / act_step], dtype=torch.float64)
    return requant_params(ratio, torch.zeros_like(ratio))


def _qrelu(h: torch.Tensor, in_step: float, act_step: float, act_max: int = ACT_MAX) -> torch.Tensor:
    return _apply_requant(h, qrelu_params(in_step, act_step)).clamp(0, act_max)


class ResBlock(nn.Module):
    """Pre-activation block h + conv2(qrelu(conv1(qrelu(h)))) with zero-initialised conv2."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = QConv(width, width, 3, ACT_MAX)
        self.conv2 = QConv(width, width, 3, ACT_MAX, zero_init=True)
        self.register_buffer("act_in_step", torch.ones((), dtype=torch.float64))
        self.register_buffer("act_mid_step", torch.ones((), dtype=torch.float64))


class Net(nn.Module):
    """One network of the chain: integer-style input -> (mean, log-scale) codes per output element.

    Float mode computes raw head outputs (means in value units, log-scales in
    ln value units) and maps them affinely to codes; the quantized mode folds
    that map into the head's integer requantization.
    """

    def __init__(self, spec: NetSpec, width: int, res_blocks: int) -> None:
        super().__init__()
        self.spec = spec
        self.conv_in = QConv(spec.in_channels, width, spec.first_kernel, spec.in_max)
        self.blocks = nn.ModuleList(ResBlock(width) for _ in range(res_blocks))
        n, m = spec.out_channels, spec.coef_channels + spec.logit_channels
        self.head = QConv(width, 2 * n + m, 3, ACT_MAX)
        nn.init.zeros_(self.head.conv.bias)
        # Raw log-scale 0 means scale e**-2 value units.
        ls_offset = (math.log(spec.bins_per_unit) - 2.0) * (1 << LOG_SCALE_FRAC)
        centre = (spec.num_bins - 1) / 2 * (1 << MEAN_FRAC)
        gain = [spec.bins_per_unit * (1 << MEAN_FRAC)] * n + [float(1 << LOG_SCALE_FRAC)] * n + [float(1 << spec.coef_frac)] * spec.coef_channels
        gain += [float(1 << LOGIT_FRAC)] * spec.logit_channels
        self.register_buffer("head_gain", torch.tensor(gain, dtype=torch.float64))
        self.register_buffer("head_offset", torch.tensor([centre] * n + [ls_offset] * n + [0.0] * m, dtype=torch.float64))
        self.register_buffer("residual_step", torch.ones((), dtype=torch.float64))
        self.register_buffer("act_head_step", torch.ones((), dtype=torch.float64))

    def forward(self, inp: torch.Tensor, quantized: bool = False) -> tuple[torch.Tensor, ...]:
        """(mean, log-scale[, coefficients]) codes (float tensors) for integer-style input ``inp``, clamped."""
        return split_head(self._forward_quantized(inp) if quantized else self._forward_float(inp), self.spec)

    def _forward_float(self, inp: torch.Tensor, record: list[torch.Tensor] | None = None) -> torch.Tensor:
        def relu(t: torch.Tensor) -> torch.Tensor:
            if record is not None:
                record.append(t.detach())
            return F.relu(t)

        h = self.conv_in(inp * self.spec.in_step)
        for block in self.blocks:
            h = h + block.conv2(relu(block.conv1(relu(h))))
        with torch.autocast(h.device.type, enabled=False):  # codes need float32, even under mixed precision
            raw = self.head(relu(h).float())
        view = (1, -1, 1, 1)
        return raw * self.head_gain.view(view).float() + self.head_offset.view(view).float()

    def _forward_quantized(self, inp: torch.Tensor) -> torch.Tensor:
        rs = float(self.residual_step)
        h = self.conv_in.forward_quantized(inp, self.spec.in_step, self.residual_step)
        for block in self.blocks:
            a_in, a_mid = float(block.act_in_step), float(block.act_mid_step)
            a = _qrelu(h, rs, a_in)
            a = block.conv1.forward_quantized(a, a_in, block.act_mid_step).clamp(0, ACT_MAX)
            h = h + block.conv2.forward_quantized(a, a_mid, self.residual_step)
        a_head, head_max = float(self.act_head_step), self.spec.head_in_max
        a = _qrelu(h, rs, a_head, head_max)
        return self.head.forward_quantized(a, a_head, 1.0 / self.head_gain, self.head_offset, head_max).float()

    @torch.no_grad()
    def calibrate(self, inp: torch.Tensor) -> None:
        """Set activation and residual steps from the float activations on a batch."""
        record: list[torch.Tensor] = []
        self._forward_float(inp, record)
        clips = [max(float(torch.quantile(t.flatten()[: 1 << 24], CALIBRATION_QUANTILE)), 1e-6) for t in record]
        steps = iter(clip / ACT_MAX for clip in clips[:-1])
        for block in self.blocks:
            block.act_in_step.fill_(next(steps))
            block.act_mid_step.fill_(next(steps))
        self.act_head_step.fill_(clips[-1] / self.spec.head_in_max)
        readers = [float(b.act_in_step) for b in self.blocks] + [clips[-1] / ACT_MAX]  # as if all read 8 bits
        self.residual_step.fill_(min(readers) / RESIDUAL_HEADROOM)


# ----------------------------------------------------------------------------
# Likelihoods (natural log, in bin units).


def logistic_log_density(z: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log density of Logistic(mean, e**log_scale) at z."""
    t = (z - mean) * torch.exp(-log_scale)
    return -t - log_scale - 2 * F.softplus(-t)


def discretized_logistic_log_mass(
    k: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor, num_bins: int
) -> torch.Tensor:
    """log P(bin k) for a logistic discretized to bins 0..num_bins-1 (unit width, open edge bins)."""
    inv = torch.exp(-log_scale)
    upper = (k + 0.5 - mean) * inv
    lower = (k - 0.5 - mean) * inv
    log_cdf_upper = F.logsigmoid(upper)
    log_sf_lower = F.logsigmoid(-lower)
    # sigmoid(a) - sigmoid(b) = sigmoid(a) * sigmoid(-b) * (1 - e**(b - a)), with a - b = inv.
    middle = log_cdf_upper + log_sf_lower + torch.log(-torch.expm1(-inv))
    return torch.where(k <= 0, log_cdf_upper, torch.where(k >= num_bins - 1, log_sf_lower, middle))


def codes_to_bins(mean: torch.Tensor, log_scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return mean / (1 << MEAN_FRAC), log_scale / (1 << LOG_SCALE_FRAC)


class Loss(NamedTuple):
    """Loss terms in bits per subpixel."""

    loss: torch.Tensor
    """Training objective: reconstruction plus free-bits-clamped KL."""
    neg_elbo: torch.Tensor
    """True negative ELBO."""
    recon: torch.Tensor
    kl: torch.Tensor
    """Per latent layer, shape (L,)."""


class BitSwapVAE(nn.Module):
    """Float Bit-Swap VAE with an integer-exact quantized mode (see the module docstring)."""

    architecture = ARCHITECTURE
    integer_type = IntegerVAE
    """The integer model class :meth:`export` makes."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        q_specs, p_specs = net_specs(config)
        self.q = nn.ModuleList(Net(s, *config.net_size(i)) for i, s in enumerate(q_specs))
        self.p = nn.ModuleList(Net(s, *config.net_size(i)) for i, s in enumerate(p_specs))
        self.quantized = False
        """Whether forward passes emulate the integer model (set by :meth:`calibrate`; a plain bool,
        so reading it never synchronises with a GPU; saved in the state dict as extra state)."""

    def get_extra_state(self) -> dict:
        return {"quantized": self.quantized}

    def set_extra_state(self, state: dict) -> None:
        self.quantized = bool(state["quantized"])

    def posterior(self, level: int, inp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes of q(z_{level+1} | .): ``inp`` is pixels (N,C,H,W) at level 0, else z_level bins."""
        if level == 0:
            x = pixels_to_input(inp.float())
        else:
            x = latents_to_input(inp.float(), self.config.latent_bins)
        return self.q[level](x, self.quantized)

    def prior(self, level: int, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Codes of p(x | z1) at level 0 (mean, log-scale and, with channel conditioning,
        coefficients), else of p(z_level | z_{level+1}); ``z`` holds bins."""
        return self.p[level](latents_to_input(z.float(), self.config.latent_bins), self.quantized)

    def top_prior(self, shape: tuple[int, ...], device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Codes of the standard logistic top prior p(z_L)."""
        mean, log_scale = top_prior_codes(self.config)
        return torch.full(shape, float(mean), device=device), torch.full(shape, float(log_scale), device=device)

    def _sample(self, mean: torch.Tensor, log_scale: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Reparameterised latent sample in bins; rounded to a bin (straight-through) when quantized."""
        u = torch.rand(mean.shape, generator=generator, device=mean.device).clamp(1e-6, 1 - 1e-6)
        z = mean + torch.exp(log_scale) * (torch.log(u) - torch.log1p(-u))
        k = self.config.latent_bins
        if self.quantized:
            return straight_through(z, torch.round(z).clamp(0, k - 1))
        return z.clamp(-0.5, k - 0.5)

    def _latent_log_prob(self, z: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
        if self.quantized:
            return discretized_logistic_log_mass(z, mean, log_scale, self.config.latent_bins)
        return logistic_log_density(z, mean, log_scale)

    def forward(self, x: torch.Tensor, free_bits: float = 1.0, generator: torch.Generator | None = None) -> Loss:
        """Loss terms for uint8 patches ``x`` (N, C, H, W), one posterior sample each."""
        dims = x[0].numel()
        recon, kl = self._terms(x, generator)
        return Loss(
            loss=(recon + kl.clamp(min=free_bits).sum()) / dims,
            neg_elbo=(recon + kl.sum()) / dims,
            recon=recon / dims,
            kl=kl.sum(1) / dims,
        )

    @torch.no_grad()
    def latent_channel_kl(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The KL of each latent layer's channels in bits per patch, (L, latent_channels), one posterior
        sample per patch of ``x``: what each channel carries."""
        return self._terms(x, generator)[1]

    def _terms(self, x: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(-log2 p(x | z1), KL per latent layer and channel), both in bits per patch."""
        n = x.shape[0]
        zs, log_q = [], []
        inp = x
        for level in range(self.config.latent_layers):
            mean, log_scale = codes_to_bins(*self.posterior(level, inp))
            z = self._sample(mean, log_scale, generator)
            zs.append(z)
            log_q.append(self._latent_log_prob(z, mean, log_scale))
            inp = z
        recon = self.recon_bits(zs[0], x) / n
        kl_channels = []
        for level in range(self.config.latent_layers):
            if level + 1 < self.config.latent_layers:
                codes = self.prior(level + 1, zs[level + 1])
            else:
                codes = self.top_prior(zs[level].shape, x.device)
            log_p = self._latent_log_prob(zs[level], *codes_to_bins(*codes))
            kl_channels.append((log_q[level] - log_p).sum((2, 3)).mean(0) / LN2)
        return recon, torch.stack(kl_channels)

    def recon_bits(self, z1: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-log2 p(x | z1) summed over the batch (the likelihood; an architecture may replace it)."""
        mean, log_scale, *coefs = self.prior(0, z1)
        if coefs:
            mean = conditioned_mean(mean, coefs[0], x.float(), exact=self.quantized)
        return -discretized_logistic_log_mass(x.float(), *codes_to_bins(mean, log_scale), PIXEL_BINS).sum() / LN2

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Fix every quantizer's steps from float activations on patches ``x`` and enter quantized mode."""
        self.quantized = False
        inp = x
        for level in range(self.config.latent_layers):
            self.q[level].calibrate(pixels_to_input(inp.float()) if level == 0 else self._latent_input(inp))
            inp = self._sample(*codes_to_bins(*self.posterior(level, inp)), generator)
            if level == 0:
                self.calibrate_likelihood(inp, x)
            else:
                self.p[level].calibrate(self._latent_input(inp))
        self.quantized = True

    def calibrate_likelihood(self, z1: torch.Tensor, x: torch.Tensor) -> None:
        """Calibrate p(x | z1)'s quantizers on latents ``z1`` of patches ``x``."""
        self.p[0].calibrate(self._latent_input(z1))

    def integer_networks(self) -> list[tuple[str, Net]]:
        """The networks the integer model holds, by its names (``q.i``, ``p.i``)."""
        return [(f"q.{i}", net) for i, net in enumerate(self.q)] + [(f"p.{i}", net) for i, net in enumerate(self.p)]

    def export(self) -> IntegerVAE:
        """The integer model of this (calibrated) model."""
        return self.integer_type(self.config, {name: export_net(net) for name, net in self.integer_networks()})

    def adopt(self, other: BitSwapVAE, keep: list[list[int]] | None = None) -> list[str]:
        """Copy the weights of each network ``other`` has under the same name (growing a trained
        model, e.g. by polyphase levels); returns the names of the networks left as they were.

        A network that is wider or has more residual blocks than ``other``'s, with the same inputs and
        outputs, starts as that one: see :func:`_grown_state`. ``keep`` (one list per latent layer, z1
        first) names the channels of ``other``'s latents this model keeps, where it has fewer:
        networks then adopt the weights that read and write those."""
        theirs = dict(other.integer_networks())
        ports = self.latent_ports()
        fresh = []
        for name, net in self.integer_networks():
            state = theirs[name].state_dict() if name in theirs else {}
            if state and keep is not None:
                state = _select_latent_channels(state, *ports[name], keep, other.config.latent_channels)
            grown = _grown_state(state, net.state_dict()) if state else None
            if grown is None:
                fresh.append(name)
            else:
                net.load_state_dict({**grown, **{key: getattr(net, key).clone() for key in _SPEC_BUFFERS}})
        return fresh

    def latent_ports(self) -> dict[str, tuple[tuple[int, int] | None, int | None]]:
        """Per network, where latents enter and leave it: ``((layer, block), layer)``. A network reads
        latent layer ``layer`` (1 = z1) as its first inputs, each channel as ``block`` consecutive
        input channels (its space-to-depth squeeze); it writes the (mean, log-scale) of a latent
        layer's channels as its head's two halves. None where no latents enter or leave."""
        layers = self.config.latent_layers
        ports = {"q.0": (None, 1), "p.0": ((1, 1), None)}
        for level in range(1, layers):
            ports[f"q.{level}"], ports[f"p.{level}"] = ((level, 1), level + 1), ((level + 1, 1), level)
        return ports

    def _latent_input(self, z: torch.Tensor) -> torch.Tensor:
        return latents_to_input(z, self.config.latent_bins)


_SPEC_BUFFERS = ("head_gain", "head_offset")
"""A network's buffers its spec fixes (e.g. the coefficient codes' precision), kept when it adopts weights."""


def _grown_state(theirs: dict[str, torch.Tensor], mine: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """A network's state holding the trained ``theirs`` inside its own initial ``mine``, or None
    where ``mine`` is not ``theirs`` grown (narrower, other inputs or outputs).

    Growing keeps the function (in float mode): each trained tensor fills the leading corner of its
    own, the channels a wider network adds keep their initial weights but nothing trained reads
    them (zero weights from new inputs to trained outputs), and added residual blocks start as the
    identity (their second convolution is zero). New channels learn from the first step, since the
    zero weights reading them get gradients. The quantizers' steps need calibrating again."""
    if not theirs.keys() <= mine.keys() or any(
        old.dim() != mine[key].dim() or any(a > b for a, b in zip(old.shape, mine[key].shape)) for key, old in theirs.items()
    ):
        return None
    ends = ("conv_in.conv.weight", 1), ("head.conv.weight", 0)  # the network's inputs, its outputs
    if any(theirs[key].shape[dim] != mine[key].shape[dim] for key, dim in ends):
        return None
    state = {}
    for key, value in mine.items():
        value = value.clone()
        old = theirs.get(key)
        if old is not None:
            value[tuple(slice(0, n) for n in old.shape)] = old
            if value.dim() == 4:  # a convolution: its trained outputs read no new input channel
                value[: old.shape[0], old.shape[1] :] = 0
        state[key] = value
    return state


def _select_latent_channels(
    state: dict[str, torch.Tensor], reads: tuple[int, int] | None, writes: int | None, keep: list[list[int]], channels: int
) -> dict[str, torch.Tensor]:
    """A network's weights restricted to the latent channels ``keep`` of a model with ``channels``
    per layer (see :meth:`BitSwapVAE.latent_ports`): the input columns that read them, the head
    rows that write them; every other input (pixel context) as it was."""
    state = dict(state)
    if reads is not None:
        layer, block = reads
        weight = state["conv_in.conv.weight"]
        columns = [c * block + t for c in keep[layer - 1] for t in range(block)] + list(range(channels * block, weight.shape[1]))
        state["conv_in.conv.weight"] = weight[:, columns]
    if writes is not None:
        rows = keep[writes - 1] + [channels + c for c in keep[writes - 1]]
        for key in ("head.conv.weight", "head.conv.bias", "head_gain", "head_offset"):
            state[key] = state[key][rows]
    return state


@torch.no_grad()
def neg_elbo(
    model: BitSwapVAE, x: torch.Tensor, batch_size: int = 64, generator: torch.Generator | None = None
) -> float:
    """Mean negative ELBO in bits per subpixel of uint8 patches ``x`` (one posterior sample each)."""
    was_training = model.training
    model.eval()
    total = 0.0
    for start in range(0, x.shape[0], batch_size):
        part = x[start : start + batch_size]
        total += float(model(part, generator=generator).neg_elbo) * part.shape[0]
    model.train(was_training)
    return total / x.shape[0]


def save_float_model(model: BitSwapVAE, path: str | os.PathLike, half: bool = False) -> None:
    """Write the float weights as safetensors, with the architecture and configuration in the
    metadata: what ``bitswap train --init`` continues from. ``half`` stores the parameters as
    float16 (the files shipped beside each model); buffers keep their precision."""
    parameters = {name for name, _ in model.named_parameters()}
    tensors = {
        name: (t.half() if half and name in parameters else t).detach().cpu().contiguous()
        for name, t in model.state_dict().items()
        if isinstance(t, torch.Tensor)
    }
    metadata = {"architecture": model.architecture, "config": model.config.to_json(), "quantized": str(model.quantized)}
    with open(path, "wb") as f:
        f.write(safetensors_bytes(tensors, metadata))


def load_float_model(path: str | os.PathLike) -> BitSwapVAE:
    """The float model of a file written by :func:`save_float_model`, of any registered architecture."""
    from .zoo import ARCHITECTURES

    with safetensors.safe_open(os.fspath(path), framework="pt") as f:
        metadata = f.metadata() or {}
        tensors = {name: f.get_tensor(name) for name in f.keys()}
    architecture = ARCHITECTURES.get(metadata.get("architecture", ""))
    if architecture is None:
        raise BitSwapError(f"{os.fspath(path)!r} is not a float model of a known architecture")
    model = architecture.float_model_class()(architecture.integer_model.config_type.from_json(metadata["config"]))
    state = model.state_dict()
    missing = [name for name, value in state.items() if isinstance(value, torch.Tensor) and name not in tensors]
    if missing:
        raise BitSwapError(f"{os.fspath(path)!r} lacks the weights {missing[:3]}")
    model.load_state_dict({name: tensors[name].to(value.dtype) if name in tensors else value for name, value in state.items()})
    model.quantized = metadata.get("quantized") == "True"
    return model


# ----------------------------------------------------------------------------
# Export: the integer model that reproduces the quantized mode exactly.


def _export_requant(rq: Requant) -> Requantizer:
    return Requantizer(rq.bias.detach().cpu().to(torch.int64), rq.multiplier.detach().cpu().to(torch.int64), rq.shift)


def _export_conv(
    conv: QConv, in_step: float, out_step: torch.Tensor, out_offset: torch.Tensor | None = None, in_max: int | None = None
) -> IntegerConv:
    w_int, rq = conv.quant_params(in_step, out_step, out_offset)
    return IntegerConv(w_int.detach().cpu().to(torch.int64), _export_requant(rq), in_max or conv.in_max)


def export_net(net: Net) -> IntegerNet:
    spec, rs = net.spec, float(net.residual_step)
    conv_in = _export_conv(net.conv_in, spec.in_step, net.residual_step)
    blocks = []
    for b in net.blocks:
        a_in, a_mid = float(b.act_in_step), float(b.act_mid_step)
        blocks.append(
            IntegerBlock(
                _export_requant(qrelu_params(rs, a_in)),
                _export_conv(b.conv1, a_in, b.act_mid_step),
                _export_conv(b.conv2, a_mid, net.residual_step),
            )
        )
    a_head = float(net.act_head_step)
    head = _export_conv(net.head, a_head, 1.0 / net.head_gain, net.head_offset, spec.head_in_max)
    return IntegerNet(spec, conv_in, blocks, _export_requant(qrelu_params(rs, a_head)), head)


def export_integer_model(model: BitSwapVAE) -> IntegerVAE:
    """The integer model of a calibrated (quantized-mode) float model; it reproduces the quantized outputs exactly."""
    if not model.quantized:
        raise BitSwapError("the float model must be calibrated (quantized mode) before export")
    with torch.no_grad():
        return model.export()
