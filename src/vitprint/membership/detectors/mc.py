"""``mc``: Hilprecht et al.'s Monte-Carlo attack (PETS 2019), with a smoothed count.

How many generated images fall within a distance epsilon of the real image?
A generator that memorised x puts many samples near it. Epsilon is the median
distance from a generated image to its nearest other generated image
(measured on the generated set at fit time, so no real image shapes it). The
count is smoothed (a Gaussian kernel of width epsilon over the ``mc_k``
nearest generated images) so ties at zero still rank: score = log of that
smoothed count, in pixel space at ``pixel_size``.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from vitprint.errors import VitprintError
from vitprint.membership.base import Detector, as_pixels
from vitprint.membership.knn import index_store, knn_distances, pixel_vectors
from vitprint.membership.registry import register_detector


@register_detector
class MonteCarlo(Detector):
    name = "mc"
    calibratable = True
    peer = True

    def __init__(self, pixel_size: int = 64, mc_k: int = 50, mc_quantile: float = 0.5, device: str = "cpu",
                 index: str = "auto", cache_dir=None):
        if mc_k < 1:
            raise VitprintError(f"mc_k must be >= 1, got {mc_k}")
        if not 0 < mc_quantile < 1:
            raise VitprintError(f"mc_quantile must be in (0, 1), got {mc_quantile}")
        self.pixel_size, self.k, self.quantile, self.device, self.index = pixel_size, mc_k, mc_quantile, device, index
        self.cache_dir = cache_dir

    def fit(self, generated, reference=None) -> "MonteCarlo":
        self.generated_ = as_pixels(generated)
        if len(self.generated_) < 2:
            raise VitprintError("mc needs at least 2 generated images")
        self.kept_ = index_store(self.cache_dir, self.index, self.generated_)
        convert = pixel_vectors(self.pixel_size)
        d, _ = knn_distances(convert(self.generated_), self.generated_, k=2, metric="l2", to_vectors=convert,
                             index=self.index, device=self.device, progress=False, **self.kept_)
        # Column 0 is the image itself (or a pixel-identical duplicate): the nearest other image is column 1.
        self.epsilon_ = max(float(np.quantile(d[:, 1], self.quantile)), 1e-6)
        return self

    def _score(self, real):
        convert = pixel_vectors(self.pixel_size)
        d, idx = knn_distances(convert(real), self.generated_, k=self.k, metric="l2", to_vectors=convert,
                               index=self.index, device=self.device, progress=False, **self.kept_)
        # log of the smoothed count, computed in the log domain so far images still rank
        return logsumexp(-0.5 * (d.astype(np.float64) / self.epsilon_) ** 2, axis=1), idx[:, 0]
