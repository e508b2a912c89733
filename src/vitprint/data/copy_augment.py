"""What a generator does to a training image it copies, as batched tensor augmentations.

Used to train the copy-detection embedding: two views of one image under
these changes must embed close together, views of different images apart.
Small shifts, rotations and zooms, a smooth local deformation, a change of
brightness/contrast (a different window), blur and noise. No flips: left and
right differ in CT. Everything runs on whole batches on the tensors' device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vitprint.data.filters import gaussian_response


@dataclass
class CopyAugment:
    """Ranges of the random changes (shift and deformation as fractions of the image)."""

    shift: float = 0.08
    rotation: float = 10.0
    zoom: float = 0.05
    deform: float = 0.01
    contrast: float = 0.2
    brightness: float = 0.1
    blur: float = 1.0
    noise: float = 0.05

    def __call__(self, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        """``(B, 1, S, S)`` in [-1, 1] -> the same shape, each image changed at random."""
        b, _, s, _ = x.shape
        dev = x.device

        def u(*shape):  # uniform in [-1, 1]
            return torch.rand(*shape, generator=gen).to(dev) * 2 - 1

        angle = u(b) * math.radians(self.rotation)
        scale = 1 + u(b) * self.zoom
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([torch.stack([cos, -sin, u(b) * 2 * self.shift], 1),
                             torch.stack([sin, cos, u(b) * 2 * self.shift], 1)], 1)
        grid = F.affine_grid(theta, (b, 1, s, s), align_corners=False)
        if self.deform > 0:
            coarse = u(b, 2, 4, 4) * 2 * self.deform
            grid = grid + F.interpolate(coarse, size=(s, s), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
        # Outside the image is air (-1), as around a CT body.
        y = F.grid_sample(x + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1
        if self.blur > 0:
            y = _blur(y, torch.rand(b, generator=gen).to(dev) * self.blur)
        a = 1 + u(b, 1, 1, 1) * self.contrast
        c = u(b, 1, 1, 1) * self.brightness
        y = a * y + c
        if self.noise > 0:
            sigma = torch.rand(b, 1, 1, 1, generator=gen).to(dev) * self.noise
            y = y + sigma * torch.randn(y.shape, generator=gen).to(dev)
        return y.clamp(-1, 1)


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Gaussian blur with one sigma (pixels) per image, in the frequency domain."""
    s = x.shape[-1]
    response = gaussian_response(s, sigma, x.device)[:, None]  # (B, 1, S, S//2+1)
    return torch.fft.irfft2(torch.fft.rfft2(x) * response, s=(s, s))
