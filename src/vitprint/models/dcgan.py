"""A standard DCGAN (Radford et al., 2016) for grayscale images of 32-256 px.

Used to build the membership setting from scratch: train it on "member"
images only, sample from it, and ask which reals it saw.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _widths(image_size: int, base: int) -> list[int]:
    steps = int(math.log2(image_size)) - 2  # 4 -> image_size
    return [base * 2 ** min(steps - 1 - i, 3) for i in range(steps)]


class Generator(nn.Module):
    """``(B, z_dim) -> (B, 1, S, S)`` in [-1, 1]: a 4x4 start, then x2 transposed convs."""

    def __init__(self, image_size: int = 64, z_dim: int = 100, base: int = 32):
        super().__init__()
        if image_size < 32 or image_size & (image_size - 1):
            raise ValueError(f"image_size must be a power of two >= 32, got {image_size}")
        self.z_dim = z_dim
        w = _widths(image_size, base)
        layers: list[nn.Module] = [nn.ConvTranspose2d(z_dim, w[0], 4, 1, 0, bias=False), nn.BatchNorm2d(w[0]), nn.ReLU(True)]
        for c_in, c_out in zip(w[:-1], w[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(w[-1], 1, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(_dcgan_init)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z[:, :, None, None])


class Discriminator(nn.Module):
    """``(B, 1, S, S) -> (B,)`` logits: strided convs with LeakyReLU(0.2), mirror of the generator."""

    def __init__(self, image_size: int = 64, base: int = 32):
        super().__init__()
        w = list(reversed(_widths(image_size, base)))
        layers: list[nn.Module] = [nn.Conv2d(1, w[0], 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        for c_in, c_out in zip(w[:-1], w[1:]):
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(w[-1], 1, 4, 1, 0, bias=False)]
        self.net = nn.Sequential(*layers)
        self.apply(_dcgan_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()


def _dcgan_init(m: nn.Module) -> None:
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)
