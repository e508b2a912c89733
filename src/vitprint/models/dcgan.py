"""Generators for building the membership setting: a standard DCGAN (Radford et
al., 2016) and a convolutional VAE of the same shape, grayscale, 32-256 px.

Train one on "member" images only, sample from it, and ask which reals it saw.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vitprint.config import check_image_size


def _widths(image_size: int, base: int) -> list[int]:
    steps = int(math.log2(image_size)) - 2  # 4 -> image_size
    return [base * 2 ** min(steps - 1 - i, 3) for i in range(steps)]


class Generator(nn.Module):
    """``(B, z_dim) -> (B, 1, S, S)`` in [-1, 1]: a 4x4 start, then x2 transposed convs."""

    def __init__(self, image_size: int = 64, z_dim: int = 100, base: int = 32):
        super().__init__()
        check_image_size(image_size, 32)
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
    """``(B, C, S, S) -> (B,)`` logits (or ``(B, out_dim)``): strided convs with LeakyReLU(0.2).

    The mirror of the generator; with ``out_dim > 1`` it is the VAE's encoder. ``in_channels`` > 1 judges
    that many grayscale images at once, stacked as channels (PacGAN's packing).
    """

    def __init__(self, image_size: int = 64, base: int = 32, out_dim: int = 1, in_channels: int = 1):
        super().__init__()
        w = list(reversed(_widths(image_size, base)))
        layers: list[nn.Module] = [nn.Conv2d(in_channels, w[0], 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        for c_in, c_out in zip(w[:-1], w[1:]):
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(w[-1], out_dim, 4, 1, 0, bias=out_dim > 1)]
        self.out_dim = out_dim
        self.net = nn.Sequential(*layers)
        self.apply(_dcgan_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net(x).flatten(1)
        return y[:, 0] if self.out_dim == 1 else y


class VAE(nn.Module):
    """A convolutional VAE with the DCGAN's shapes: encoder ``(B,1,S,S) -> (mu, logvar)``, decoder = Generator."""

    def __init__(self, image_size: int = 64, z_dim: int = 64, base: int = 32):
        super().__init__()
        self.z_dim = z_dim
        self.encoder = Discriminator(image_size, base, out_dim=2 * z_dim)
        self.decoder = Generator(image_size, z_dim, base)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        return self.decoder(z), mu, logvar


def _dcgan_init(m: nn.Module) -> None:
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)
