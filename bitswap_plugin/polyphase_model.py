"""Training only: the float model of architecture ``bitswap-polyphase`` (:mod:`.polyphase`).

:class:`PolyphaseBitSwapVAE` is the float Bit-Swap VAE with p(x | z1) replaced
by :class:`PassLikelihood`, one :class:`~bitswap_plugin.model.Net` per pass of
the schedule. Training is teacher-forced: every pass sees the true subimages
of the passes before it, which is exactly what the decoder will have decoded.
The quantized mode and the export follow the base model, so the integer
model reproduces the quantized codes exactly.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from .architecture import PIXEL_BINS, conditioned_mean, latents_to_input
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
            for s, (mean, log_scale, *coefs) in zip(p.subimages, split_pass(net(inp, quantized), len(p.subimages), self.config.channels)):
                pixels = subimage(x, s, p.depth).float()
                mean = conditioned_mean(mean, coefs[0] if coefs else None, pixels, exact=quantized)
                yield p, s, -discretized_logistic_log_mass(pixels, *codes_to_bins(mean, log_scale), PIXEL_BINS).sum() / LN2

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
