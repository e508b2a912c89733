"""What each image is described by when it is attributed: its anatomy and its texture.

``anatomy``: the image at 32 px, zero-mean and unit-norm, so the dot product of
two images is their normalised correlation. A generator reproduces the
patients it was trained on, so a generated image lies nearest the subset its
generator saw. ``texture``: what a cohort's scanner and patients leave on
every image whatever the anatomy: the intensity histogram, the overall level
and contrast, the fine-grain noise left after a small blur (medians, so edges
do not count), the share of the field of view the body fills.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.functional import gaussian_blur

from vitprint.errors import VitprintError

THUMB = 32
FINE = 64  # the size the registered correlation looks at: a 32 px thumbnail loses the patient
BINS = 16


@dataclass
class Described:
    """``features``: ``(N, 1024 + 22)`` anatomy and texture; ``fine``: ``(N, s, s)`` lightly blurred images at
    ``min(64, S)`` px, for the registered correlation."""

    features: np.ndarray
    fine: np.ndarray

    def __len__(self) -> int:
        return len(self.features)


def _floats(pixels, start: int, stop: int) -> torch.Tensor:
    return torch.from_numpy(np.asarray(pixels[start:stop], np.float32) / 255.0)[:, None]


def anatomy(pixels, batch: int = 512) -> np.ndarray:
    """uint8 ``(N, S, S)`` -> ``(N, 1024)`` float32: each image at 32 px, zero-mean, unit-norm."""
    out = []
    for s in range(0, len(pixels), batch):
        x = F.adaptive_avg_pool2d(_floats(pixels, s, s + batch), THUMB).flatten(1)
        x = x - x.mean(1, keepdim=True)
        out.append(F.normalize(x, dim=1).numpy())
    return np.concatenate(out) if out else np.zeros((0, THUMB * THUMB), np.float32)


def fine(pixels, batch: int = 512, sigma: float = 0.7) -> np.ndarray:
    """uint8 ``(N, S, S)`` -> ``(N, s, s)`` float32 at ``s = min(64, S)``, blurred by ``sigma`` px so a sub-pixel
    misalignment or a generator's noise moves the correlation little."""
    size = min(FINE, pixels.shape[-1])
    k = 2 * round(3 * sigma) + 1
    out = [gaussian_blur(F.adaptive_avg_pool2d(_floats(pixels, s, s + batch), size), [k, k], [sigma, sigma])[:, 0].numpy()
           for s in range(0, len(pixels), batch)]
    return np.concatenate(out) if out else np.zeros((0, size, size), np.float32)


def texture(pixels, batch: int = 256) -> np.ndarray:
    """uint8 ``(N, S, S)`` -> ``(N, 22)`` float32: a 16-bin histogram, mean, standard deviation, body share,
    and the median absolute residual of a blur at two widths and its 90th percentile."""
    out = []
    for s in range(0, len(pixels), batch):
        x = _floats(pixels, s, s + batch)
        flat = x.flatten(1)
        hist = torch.stack([torch.histc(v, BINS, 0.0, 1.0) for v in flat]) / flat.shape[1]
        feats = [hist, flat.mean(1, keepdim=True), flat.std(1, keepdim=True), (flat > 0.05).float().mean(1, keepdim=True)]
        for sigma in (1.0, 2.0):
            r = (x - gaussian_blur(x, [2 * round(3 * sigma) + 1] * 2, [sigma, sigma])).abs().flatten(1)
            feats.append(r.median(1, keepdim=True).values)
        feats.append(torch.quantile(r, 0.9, dim=1, keepdim=True))
        out.append(torch.cat(feats, 1).numpy())
    return np.concatenate(out) if out else np.zeros((0, BINS + 6), np.float32)


class FeatureSpace:
    """Anatomy and texture in one vector, the texture standardised on the real images.

    Each block is weighted to an expected squared norm of 1 over the real images, so
    neither drowns the other in a distance or a linear model. ``fit(real)`` returns
    self; ``transform(pixels)`` returns ``(N, 1024 + 22)`` float32.
    """

    def fit(self, real) -> "FeatureSpace":
        if len(real) < 2:
            raise VitprintError(f"describing images needs at least 2 real images, got {len(real)}")
        t = texture(real)
        self.mean_ = t.mean(0)
        self.scale_ = t.std(0) + 1e-6
        self.weight_ = 1.0 / np.sqrt(t.shape[1])
        return self

    def transform(self, pixels) -> np.ndarray:
        t = (texture(pixels) - self.mean_) / self.scale_ * self.weight_
        return np.concatenate([anatomy(pixels), t.astype(np.float32)], 1)

    def describe(self, pixels) -> Described:
        return Described(self.transform(pixels), fine(pixels))
