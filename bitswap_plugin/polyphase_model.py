"""Training only: the float model of architecture ``bitswap-polyphase`` (:mod:`.polyphase`).

:class:`PolyphaseBitSwapVAE` is the float Bit-Swap VAE with p(x | z1) replaced
by :class:`PassLikelihood`, one :class:`~bitswap_plugin.model.Net` per pass of
the schedule. Training is teacher-forced: every pass sees the true subimages
of the passes before it, which is exactly what the decoder will have decoded.
A mixture likelihood (``mixture`` > 1) sums its components' probabilities of
each whole pixel, weighed by the softmax of the logits; the integer model
computes the same with integer weights.
The quantized mode and the export follow the base model, so the integer
model reproduces the quantized codes exactly.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .architecture import PIXEL_BINS, conditioned_mean, latents_to_input
from .errors import BitSwapError
from .fixedpoint import LOGIT_FRAC
from .model import LN2, BitSwapVAE, Net, codes_to_bins, discretized_logistic_log_mass
from .polyphase import ARCHITECTURE, SUBIMAGES, Pass, PolyphaseConfig, PolyphaseVAE, pass_input, pass_plan, pass_specs, split_pass, subimage


class PassLikelihood(nn.Module):
    """The pass networks of p(x | z1), float (or quantized-mode) and teacher-forced; ``nets[i]`` is
    the network of pass ``i`` of :func:`~bitswap_plugin.polyphase.pass_plan`."""

    def __init__(self, config: PolyphaseConfig) -> None:
        super().__init__()
        self.config = config
        self.plan = pass_plan(config)
        self.nets = nn.ModuleList(Net(spec, config.context_width, config.context_blocks) for spec in pass_specs(config))

    def _inputs(self, z1: torch.Tensor, x: torch.Tensor) -> list[torch.Tensor]:
        """Each pass's integer input given latent bins ``z1`` and the true pixels ``x``."""
        z1_input = latents_to_input(z1.float(), self.config.latent_bins)
        return [pass_input(z1_input, x.float(), p) for p in self.plan]

    def subimage_bits(self, z1: torch.Tensor, x: torch.Tensor, quantized: bool) -> Iterator[tuple[Pass, int, torch.Tensor]]:
        """(pass, subimage of its level, -log2 p of that subimage's pixels summed over the batch), in decoding order."""
        for net, inp, p in zip(self.nets, self._inputs(z1, x), self.plan):
            for s, codes in zip(p.subimages, split_pass(net(inp, quantized), len(p.subimages))):
                yield p, s, -self.pixel_log_mass(subimage(x, s, p.depth).float(), codes, quantized).sum() / LN2

    def pixel_log_mass(self, pixels: torch.Tensor, codes: tuple[torch.Tensor, ...], quantized: bool) -> torch.Tensor:
        """log p (nats) of each whole pixel (N, h, w) of a subimage under its pass head's ``codes``
        (:func:`~bitswap_plugin.polyphase.split_pass`): the mixture of its components' products
        over the channels."""
        k, conditioning = self.config.mixture, self.config.channel_conditioning
        mean, log_scale, *rest = codes
        coefs = rest[0] if conditioning else None
        if k == 1:
            mean = conditioned_mean(mean, coefs, pixels, exact=quantized, coef_frac=self.config.coef_frac)
            return discretized_logistic_log_mass(pixels, *codes_to_bins(mean, log_scale), PIXEL_BINS).sum(1)
        log_p = []
        for mean_k, log_scale_k, *coefs_k in zip(*(t.chunk(k, 1) for t in [mean, log_scale] + ([coefs] if conditioning else []))):
            mean_k = conditioned_mean(mean_k, coefs_k[0] if coefs_k else None, pixels, exact=quantized, coef_frac=self.config.coef_frac)
            log_p.append(discretized_logistic_log_mass(pixels, *codes_to_bins(mean_k, log_scale_k), PIXEL_BINS).sum(1))
        return torch.logsumexp(torch.stack(log_p, 1) + F.log_softmax(rest[-1] / (1 << LOGIT_FRAC), 1), 1)

    @torch.no_grad()
    def adopt_single(self, single: PassLikelihood, generator: torch.Generator) -> None:
        """Start a mixture from a trained one-logistic likelihood of the same passes: component 0
        is its head; the others copy it with their scales e**+-0.5 as wide and a little weight
        noise, and the logits start at 2 nats for component 0 against 0 for the rest."""
        k, channels = self.config.mixture, self.config.channels
        for net, plain, p in zip(self.nets, single.nets, self.plan):
            net.load_state_dict({name: value for name, value in plain.state_dict().items() if not name.startswith("head")}
                                | {name: value for name, value in net.state_dict().items() if name.startswith("head")})
            m = len(p.subimages)
            weight, bias = plain.head.conv.weight, plain.head.conv.bias
            widths = [channels * m, channels * m, plain.spec.coef_channels]  # means, log-scales, coefficients
            start = 0
            for part, width in enumerate(w for w in widths if w):
                w = weight[start : start + width]
                for comp in range(k):
                    rows = slice(k * start + comp * width, k * start + (comp + 1) * width)
                    net.head.conv.weight[rows] = w + (torch.randn(w.shape, generator=generator) * (0.01 * float(w.std())) if comp else 0)
                    net.head.conv.bias[rows] = bias[start : start + width]
                    if part == 1 and comp:
                        net.head.conv.bias[rows] += 0.5 if comp % 2 else -0.5
                start += width
            logits = k * start
            net.head.conv.weight[logits:] = 0
            net.head.conv.bias[logits:] = 0
            net.head.conv.bias[logits : logits + m] = 2.0

    def recon_bits(self, z1: torch.Tensor, x: torch.Tensor, quantized: bool) -> torch.Tensor:
        """-log2 p(x | z1) of each top-level subimage A..D, summed over the batch: (4,) (with
        ``levels`` > 1, the bits of A's own subimages count for A)."""
        bits = [torch.zeros((), device=x.device) for _ in range(SUBIMAGES)]
        for p, s, b in self.subimage_bits(z1, x, quantized):
            top = 0 if p.depth else s
            bits[top] = bits[top] + b
        return torch.stack(bits)

    @torch.no_grad()
    def calibrate(self, z1: torch.Tensor, x: torch.Tensor) -> None:
        for net, inp in zip(self.nets, self._inputs(z1, x)):
            net.calibrate(inp)


class PolyphaseBitSwapVAE(BitSwapVAE):
    """The float Bit-Swap VAE with p(x | z1) decoded in passes over the polyphase subimages."""

    architecture = ARCHITECTURE
    integer_type = PolyphaseVAE

    def __init__(self, config: PolyphaseConfig) -> None:
        super().__init__(config)
        self.p[0] = PassLikelihood(config)

    def adopt(self, other: BitSwapVAE, keep: list[list[int]] | None = None) -> list[str]:
        """:meth:`BitSwapVAE.adopt`, and a mixture growing from ``other``'s one logistic starts as it
        (:meth:`PassLikelihood.adopt_single`)."""
        fresh = super().adopt(other, keep)
        grows = isinstance(other, PolyphaseBitSwapVAE) and other.config.mixture == 1 < self.config.mixture
        if grows and other.config.levels == self.config.levels:
            if keep is not None:
                raise BitSwapError("a model cannot grow a mixture and lose latent channels in one run: one at a time")
            self.p[0].adopt_single(other.p[0], torch.Generator().manual_seed(0))
            fresh = [name for name in fresh if not name.startswith("pass.")]
        return fresh

    def recon_bits(self, z1: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.p[0].recon_bits(z1, x, self.quantized).sum()

    def calibrate_likelihood(self, z1: torch.Tensor, x: torch.Tensor) -> None:
        self.p[0].calibrate(z1, x)

    def prior(self, level: int, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if level == 0:
            raise ValueError("p(x | z1) of a polyphase model needs the pixels: use p[0].recon_bits")
        return super().prior(level, z)

    def latent_ports(self) -> dict[str, tuple[tuple[int, int] | None, int | None]]:
        """The base model's, with every pass reading z1 squeezed to its level instead of p(x | z1)."""
        ports = super().latent_ports()
        del ports["p.0"]
        ports.update({p.name: ((1, SUBIMAGES**p.depth), None) for p in self.p[0].plan})
        return ports

    def integer_networks(self) -> list[tuple[str, Net]]:
        passes = [(p.name, net) for p, net in zip(self.p[0].plan, self.p[0].nets)]
        return [(name, net) for name, net in super().integer_networks() if name != "p.0"] + passes
