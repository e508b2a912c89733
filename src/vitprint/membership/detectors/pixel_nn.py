"""``pixel_nn``: GAN-Leaks' full black-box attack (Chen et al., CCS 2020).

Score = -L2 distance from the real image to its nearest generated image in
pixel space, at ``pixel_size`` (area-downsampled).
"""

from __future__ import annotations

import numpy as np

from vitprint.errors import VitprintError
from vitprint.membership.base import Detector, as_pixels
from vitprint.membership.knn import index_store, knn_distances, pixel_vectors
from vitprint.membership.registry import register_detector


@register_detector
class PixelNN(Detector):
    name = "pixel_nn"
    calibratable = True
    peer = True

    def __init__(self, pixel_size: int = 64, device: str = "cpu", index: str = "auto", cache_dir=None):
        if pixel_size < 4:
            raise VitprintError(f"pixel_size must be >= 4, got {pixel_size}")
        self.pixel_size, self.device, self.index, self.cache_dir = pixel_size, device, index, cache_dir

    def fit(self, generated, reference=None) -> "PixelNN":
        self.generated_ = as_pixels(generated)
        self.kept_ = index_store(self.cache_dir, self.index, self.generated_)
        return self

    def _score(self, real):
        convert = pixel_vectors(self.pixel_size)
        d, idx = knn_distances(convert(real), self.generated_, k=1, metric="l2", to_vectors=convert,
                               index=self.index, device=self.device, **self.kept_)
        return -d[:, 0].astype(np.float64), idx[:, 0]
