"""``subspace``: how far a real image lies from the space the generated images span.

A generator that fitted its members can produce them (or images very near them):
they lie on its output manifold, while images it never saw keep a part it
cannot produce. Only samples are at hand, so the manifold is approximated by
the principal subspace of the generated images: score = -(squared distance of
the image's thumbnail at ``pixel_size`` to the affine span of the leading
principal components that hold ``subspace_variance`` of the generated set's
variance). It is a linear, sample-only stand-in for inverting the generator
(GAN-Leaks' partial black-box attack searches the generator's input for the
closest output, which needs the generator itself), and it sees a pull toward
the members where no sample is a near-copy, which nearest-neighbour scores
need.

``subspace_cal`` subtracts the same distance to the reference set's own
principal subspace: an image that any subspace of such images explains well (a
plain one) stops counting.

PCA is scikit-learn's (randomized SVD on large sets), fitted on at most
``subspace_fit`` generated images (a seeded random subset beyond that) and at
most ``subspace_max_rank`` components.
"""

from __future__ import annotations

import logging

import numpy as np
from sklearn.decomposition import PCA

from vitprint.errors import VitprintError
from vitprint.membership.base import Detector, as_pixels
from vitprint.membership.knn import index_store, knn_distances, pixel_vectors, thumbnails
from vitprint.membership.registry import register_detector

log = logging.getLogger(__name__)

_BATCH = 2048  # images per conversion and projection batch


@register_detector
class Subspace(Detector):
    name = "subspace"
    calibratable = True

    def __init__(self, pixel_size: int = 64, subspace_variance: float = 0.95, subspace_max_rank: int = 1024,
                 subspace_fit: int = 10000, seed: int = 0, device: str = "cpu", index: str = "auto", cache_dir=None):
        if pixel_size < 4:
            raise VitprintError(f"pixel_size must be >= 4, got {pixel_size}")
        if not 0 < subspace_variance < 1:
            raise VitprintError(f"subspace_variance must be in (0, 1), got {subspace_variance}")
        if subspace_max_rank < 1 or subspace_fit < 3:
            raise VitprintError("subspace_max_rank must be >= 1 and subspace_fit >= 3")
        self.pixel_size, self.variance, self.max_rank, self.fit_max = pixel_size, subspace_variance, subspace_max_rank, subspace_fit
        self.seed, self.device, self.index, self.cache_dir = seed, device, index, cache_dir

    def fit(self, generated, reference=None) -> "Subspace":
        return self._fit_span(generated)

    def fit_like(self, fitted: "Subspace", generated, reference=None) -> "Subspace":
        """The other generated set's span with as many components as ``fitted`` kept, so that a distance
        (and a threshold fitted on one set's scores) means the same on both."""
        return self._fit_span(generated, rank=fitted.rank_)

    def _fit_span(self, generated, rank: int | None = None) -> "Subspace":
        """Fit the span: ``rank`` components, or (None) as many as hold ``subspace_variance``."""
        self.generated_ = as_pixels(generated)
        n = len(self.generated_)
        if n < 1:
            raise VitprintError("subspace needs at least 1 image to span")
        rows = np.arange(n) if n <= self.fit_max else np.sort(
            np.random.default_rng(self.seed).choice(n, self.fit_max, replace=False))
        z = self._thumbnails(self.generated_, rows)
        self.mean_, self.components_, self.rank_ = z.mean(0), np.zeros((0, z.shape[1])), 0
        if len(z) >= 2 and float(z.var(0).sum()) > 0:  # one image, or identical ones: the span is a point
            pca = PCA(min(len(z) - 1, z.shape[1], self.max_rank), random_state=self.seed).fit(z)
            # explained_variance_ratio_ is relative to the data's whole variance, even when fewer were fitted
            held = np.cumsum(pca.explained_variance_ratio_)
            self.rank_ = min(int(np.searchsorted(held, self.variance)) + 1 if rank is None else max(rank, 1), len(held))
            if rank is None and held[self.rank_ - 1] < self.variance:
                log.info("subspace: %d components hold %.1f%% of the generated images' variance, short of the %.0f%% "
                         "asked (subspace_max_rank caps them)", self.rank_, 100 * held[-1], 100 * self.variance)
            self.mean_, self.components_ = pca.mean_, pca.components_[:self.rank_]
        self.kept_ = index_store(self.cache_dir, self.index, self.generated_)
        return self

    def _thumbnails(self, images, rows) -> np.ndarray:
        """``(len(rows), pixel_size**2)`` float64 thumbnails, converted a batch at a time (bounded memory)."""
        out = np.empty((len(rows), self.pixel_size ** 2), np.float64)
        for start in range(0, len(rows), _BATCH):
            out[start:start + _BATCH] = thumbnails(images[rows[start:start + _BATCH]], self.pixel_size)
        return out

    def distances(self, real) -> np.ndarray:
        """``(N,)`` squared distance of each real image's thumbnail to the generated images' subspace."""
        real = as_pixels(real)
        out = np.empty(len(real), np.float64)
        for start in range(0, len(real), _BATCH):
            c = thumbnails(real[start:start + _BATCH], self.pixel_size) - self.mean_
            inside = c @ self.components_.T
            out[start:start + len(c)] = np.maximum((c * c).sum(1) - (inside * inside).sum(1), 0.0)
        return out

    def score_samples(self, real) -> np.ndarray:
        """Scores alone, without the search for each image's nearest generated image (which only the
        evidence needs: the calibrated variant's reference side and its folds never show it)."""
        return -self.distances(real)

    def _score(self, real):
        convert = pixel_vectors(self.pixel_size)  # the nearest generated image, as the evidence to show
        _, idx = knn_distances(convert(real), self.generated_, k=1, metric="l2", to_vectors=convert,
                               index=self.index, device=self.device, progress=False, **self.kept_)
        return -self.distances(real), idx[:, 0]
