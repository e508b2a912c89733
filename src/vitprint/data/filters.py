"""Gaussian filtering in the frequency domain (one place for the response both augmentation and alignment use)."""

from __future__ import annotations

import math

import torch


def gaussian_response(size: int, sigma, device=None) -> torch.Tensor:
    """Frequency response ``(..., size, size//2+1)`` of a Gaussian blur of ``sigma`` pixels, for ``rfft2``.

    ``sigma`` is a number or a tensor (its shape leads the result's: one response per sigma).
    """
    fy = torch.fft.fftfreq(size, device=device)[:, None]
    fx = torch.fft.rfftfreq(size, device=device)[None]
    sigma = torch.as_tensor(sigma, dtype=torch.float32, device=device)
    return torch.exp(-2 * math.pi ** 2 * sigma[..., None, None] ** 2 * (fx ** 2 + fy ** 2))
