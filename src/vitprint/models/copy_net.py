"""A small convolutional embedding for copy detection (trained contrastively).

Keeps a coarse spatial layout (a 4x4 grid of features, not one global
average): two slices with similar texture but different anatomy must not
embed alike.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True), nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class CopyNet(nn.Module):
    """``(B, 1, S, S)`` in [-1, 1] -> ``(B, dim)`` unit-norm embedding; ``project`` adds the training head."""

    def __init__(self, width: int = 32, dim: int = 128, grid: int = 4):
        super().__init__()
        chans = [1, width, 2 * width, 4 * width, 4 * width]
        self.features = nn.Sequential(*[_block(a, b) for a, b in zip(chans[:-1], chans[1:])])
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.embed = nn.Linear(chans[-1] * grid * grid, dim)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(dim, dim))
        self.cfg = {"width": width, "dim": dim, "grid": grid}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.embed(self.pool(self.features(x)).flatten(1)), dim=1)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, dim)`` unit-norm projection used by the contrastive loss only."""
        return F.normalize(self.head(self.embed(self.pool(self.features(x)).flatten(1))), dim=1)
