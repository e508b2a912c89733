"""``latent_nn``: distance from a real image's autoencoder latent to its k nearest generated latents.

Score = -mean distance (cosine or L2) over the k nearest generated images.
"""

from __future__ import annotations

import numpy as np
import torch

from vitprint.errors import VitprintError
from vitprint.inference import encode
from vitprint.membership.base import Detector
from vitprint.membership.knn import METRICS, knn_distances
from vitprint.membership.registry import register_detector


@register_detector
class LatentNN(Detector):
    name = "latent_nn"
    needs_autoencoder = True
    calibratable = True

    def __init__(self, autoencoder=None, k: int = 5, latent_metric: str = "cosine", batch_size: int = 64,
                 precision: str = "fp32", device: str = "cpu", index: str = "auto"):
        if autoencoder is None:
            raise VitprintError("latent_nn needs a trained autoencoder")
        if k < 1:
            raise VitprintError(f"k must be >= 1, got {k}")
        if latent_metric not in METRICS:
            raise VitprintError(f"latent metric must be one of {METRICS}, got {latent_metric!r}")
        self.autoencoder, self.k, self.metric = autoencoder, k, latent_metric
        self.batch_size, self.precision, self.device, self.index = batch_size, precision, device, index

    def _encode(self, pixels) -> torch.Tensor:
        return torch.from_numpy(encode(self.autoencoder.encoder, pixels, self.batch_size, self.precision))

    def fit(self, generated, reference=None) -> "LatentNN":
        self.latents_ = self._encode(generated)
        return self

    def _score(self, real):
        d, idx = knn_distances(self._encode(real), self.latents_, k=self.k, metric=self.metric, device=self.device,
                               index=self.index)
        return -d.mean(1).astype(np.float64), idx[:, 0]
