"""Training only: the float model of architecture ``bitswap-polyphase`` (:mod:`.polyphase`).

:class:`PolyphaseBitSwapVAE` is the float Bit-Swap VAE with p(x | z1) replaced
by :class:`PassLikelihood`, one :class:`~bitswap_plugin.model.Net` per pass of
the schedule. Training is teacher-forced: every pass sees the true subimages
of the passes before it, which is exactly what the decoder will have decoded.
The quantized mode and the export follow the base model, so the integer
model reproduces the quantized codes exactly.
"""

from __future__ import annotations

import torch
from torch import nn

from .architecture import PIXEL_BINS, conditioned_mean, latents_to_input
from .model import LN2, BitSwapVAE, Net, codes_to_bins, discretized_logistic_log_mass, export_net
from .polyphase import ARCHITECTURE, SUBIMAGES, PolyphaseConfig, PolyphaseVAE, pass_input, pass_specs, split_pass, subimage


class PassLikelihood(nn.Module):
    """The pass networks of p(x | z1), float (or quantized-mode) and teacher-forced."""

    def __init__(self, config: PolyphaseConfig) -> None:
        super().__init__()
        self.config = config
        self.nets = nn.ModuleList(Net(spec, config.context_width, config.context_blocks) for spec in pass_specs(config))

    def _inputs(self, z1: torch.Tensor, x: torch.Tensor) -> list[torch.Tensor]:
        """Each pass's integer input given latent bins ``z1`` and the true pixels ``x``."""
        z1_input = latents_to_input(z1.float(), self.config.latent_bins)
        inputs, decoded = [], []
        for subimages in self.config.passes:
            inputs.append(pass_input(z1_input, x.float(), decoded))
            decoded += subimages
        return inputs

    def recon_bits(self, z1: torch.Tensor, x: torch.Tensor, quantized: bool) -> torch.Tensor:
        """-log2 p(x | z1) of each subimage, summed over the batch: (4,)."""
        bits = torch.zeros(SUBIMAGES, device=x.device)
        for net, inp, subimages in zip(self.nets, self._inputs(z1, x), self.config.passes):
            parts = split_pass(net(inp, quantized), len(subimages), self.config.channels)
            for s, (mean, log_scale, *coefs) in zip(subimages, parts):
                pixels = subimage(x, s).float()
                mean = conditioned_mean(mean, coefs[0] if coefs else None, pixels, exact=quantized)
                log_mass = discretized_logistic_log_mass(pixels, *codes_to_bins(mean, log_scale), PIXEL_BINS)
                bits[s] = -log_mass.sum() / LN2
        return bits

    @torch.no_grad()
    def calibrate(self, z1: torch.Tensor, x: torch.Tensor) -> None:
        for net, inp in zip(self.nets, self._inputs(z1, x)):
            net.calibrate(inp)


class PolyphaseBitSwapVAE(BitSwapVAE):
    """The float Bit-Swap VAE with p(x | z1) decoded in passes over the polyphase subimages."""

    architecture = ARCHITECTURE

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

    def export(self) -> PolyphaseVAE:
        nets = {name: export_net(net) for name, net in self.integer_networks()}
        nets.update({f"pass.{j}": export_net(net) for j, net in enumerate(self.p[0].nets)})
        return PolyphaseVAE(self.config, nets)

    def integer_networks(self) -> list[tuple[str, Net]]:
        return [(name, net) for name, net in super().integer_networks() if name != "p.0"]
