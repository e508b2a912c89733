"""The seed's decoder: a linear map to 256x8x8, then x2 transposed-conv steps."""

from __future__ import annotations

import math

import torch
from torch import nn

from vitprint.config import check_image_size

START = 8  # spatial size after the linear layer
START_CHANNELS = 256
MIN_CHANNELS = 8


class ResidualBlock(nn.Module):
    """Two conv3x3-BN-LeakyReLU(0.1) layers plus a skip (1x1 conv when channels change).

    ``(B, c_in, H, W) -> (B, c_out, H, W)``.
    """

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.LeakyReLU(0.1, inplace=True),
        )
        self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.skip(x)


def decoder_channels(image_size: int) -> list[int]:
    """Channels after each step: 256 -> 128 -> ... halving, one step per doubling.

    For 256 px that is ``[256, 128, 64, 32, 16, 8]`` (the seed's), never below 8.
    """
    steps = int(math.log2(image_size // START))
    return [max(START_CHANNELS >> i, MIN_CHANNELS) for i in range(steps + 1)]


class Decoder(nn.Module):
    """``(B, latent_dim) -> (B, out_chans, S, S)`` in [-1, 1], S a power of two >= 16."""

    def __init__(self, latent_dim: int, image_size: int, out_chans: int = 1):
        super().__init__()
        check_image_size(image_size, 2 * START)
        chans = decoder_channels(image_size)
        self.fc = nn.Sequential(nn.Linear(latent_dim, START_CHANNELS * START * START), nn.ReLU(True))
        layers: list[nn.Module] = []
        for c_in, c_out in zip(chans[:-1], chans[1:]):
            # The block changes the channels (through its 1x1 skip), the
            # transposed conv doubles the size.
            layers += [
                ResidualBlock(c_in, c_out),
                nn.ConvTranspose2d(c_out, c_out, 3, stride=2, padding=1, output_padding=1),
                nn.BatchNorm2d(c_out),
                nn.LeakyReLU(0.1, inplace=True),
            ]
        layers += [
            nn.Conv2d(chans[-1], out_chans, 3, padding=1),
            nn.Tanh(),
        ]
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.fc(z).view(z.shape[0], START_CHANNELS, START, START)
        return self.body(x)
