"""Cutting image planes into 32x32 patches and putting them back.

Border patches are padded by edge replication. The decoder repeats the rule
from the real pixels of the same patch, so pad pixels are never coded
(:class:`~bitswap_plugin.distributions.DiscretizedLogistic` marks them
``known``: zero bits).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .container import PATCH


@dataclass(frozen=True)
class PatchGrid:
    """The raster-ordered grid of patches covering a ``height x width`` plane."""

    height: int
    width: int

    @property
    def rows(self) -> int:
        return -(-self.height // PATCH)

    @property
    def cols(self) -> int:
        return -(-self.width // PATCH)

    def __len__(self) -> int:
        return self.rows * self.cols

    def _origins(self, start: int, stop: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.arange(start, stop, device=device)
        return (index // self.cols) * PATCH, (index % self.cols) * PATCH

    def _valid(self, start: int, stop: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        top, left = self._origins(start, stop, device)
        return (self.height - top).clamp(max=PATCH), (self.width - left).clamp(max=PATCH)

    def extract(self, plane: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Patches ``start .. stop-1`` of a (C, H, W) plane as int64 (n, C, 32, 32)."""
        top, left = self._origins(start, stop, plane.device)
        offsets = torch.arange(PATCH, device=plane.device)
        rows = (top[:, None] + offsets).clamp(max=self.height - 1)
        cols = (left[:, None] + offsets).clamp(max=self.width - 1)
        patches = plane[:, rows[:, :, None], cols[:, None, :]]
        return patches.permute(1, 0, 2, 3).to(torch.int64)

    def padding_mask(self, start: int, stop: int, device: torch.device) -> torch.Tensor:
        """(n, 1, 32, 32) bool, True where a patch pixel lies outside the plane."""
        valid_h, valid_w = self._valid(start, stop, device)
        offsets = torch.arange(PATCH, device=device)
        outside_h = offsets[None, :, None] >= valid_h[:, None, None]
        outside_w = offsets[None, None, :] >= valid_w[:, None, None]
        return (outside_h | outside_w)[:, None]

    def fill_padding(self, patches: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Rebuild pad pixels of decoded patches from their real pixels (as :meth:`extract`)."""
        valid_h, valid_w = self._valid(start, stop, patches.device)
        offsets = torch.arange(PATCH, device=patches.device)
        rows = torch.minimum(offsets, valid_h[:, None] - 1)
        cols = torch.minimum(offsets, valid_w[:, None] - 1)
        n, c = patches.shape[:2]
        index = rows[:, None, :, None].expand(n, c, PATCH, PATCH)
        patches = patches.gather(2, index)
        index = cols[:, None, None, :].expand(n, c, PATCH, PATCH)
        return patches.gather(3, index)

    def insert(self, plane: torch.Tensor, patches: torch.Tensor, start: int, stop: int) -> None:
        """Write the real pixels of patches ``start .. stop-1`` into a (C, H, W) plane."""
        for i, index in enumerate(range(start, stop)):
            top, left = divmod(index, self.cols)
            top, left = top * PATCH, left * PATCH
            h, w = min(PATCH, self.height - top), min(PATCH, self.width - left)
            plane[:, top : top + h, left : left + w] = patches[i, :, :h, :w]
