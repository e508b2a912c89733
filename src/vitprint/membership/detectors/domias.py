"""``domias``: DOMIAS's density ratio (van Breugel et al., AISTATS 2023).

Score = log p_generated(x) - log p_reference(x): an image the generator
over-represents relative to real images it never saw. Densities are Gaussian
KDEs (scipy's ``gaussian_kde``, Scott's bandwidth, as the ``domias`` package's
KDE variant uses) in a compact feature space: the thumbnails at
``pixel_size`` reduced to ``domias_dims`` principal components fitted on the
generated and reference images together. Needs a reference set; a real image
that is also in the reference is scored cross-fitted.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy.stats import gaussian_kde
from sklearn.decomposition import PCA

from vitprint.errors import VitprintError
from vitprint.membership.base import Detector, as_pixels
from vitprint.membership.knn import thumbnails
from vitprint.membership.registry import register_detector

log = logging.getLogger(__name__)


def _kde(z: np.ndarray, spread: float, rng: np.random.Generator, what: str) -> gaussian_kde:
    """Scott's KDE of ``(m, d)`` features; where they lie in a lower-dimensional subspace (a collapsed
    generator's identical images, say) its covariance is singular, and a seeded jitter of 1/1000 of the
    features' spread makes the density a narrow bump there instead of an error."""
    try:
        return gaussian_kde(z.T)
    except (np.linalg.LinAlgError, ValueError):
        log.info("domias: the %s images' features are (nearly) all alike; their density is a narrow bump", what)
        return gaussian_kde((z + 1e-3 * spread * rng.standard_normal(z.shape)).T)


@register_detector
class Domias(Detector):
    name = "domias"
    needs_reference = True
    peer = True

    def __init__(self, pixel_size: int = 64, domias_dims: int = 8, seed: int = 0):
        if domias_dims < 1:
            raise VitprintError(f"domias_dims must be >= 1, got {domias_dims}")
        self.pixel_size, self.dims, self.seed = pixel_size, domias_dims, seed

    def _features(self, pixels) -> np.ndarray:
        return thumbnails(as_pixels(pixels), self.pixel_size)

    def fit(self, generated, reference=None) -> "Domias":
        if reference is None:
            raise VitprintError("domias needs a reference set (real images the generator never saw)")
        g, r = self._features(generated), self._features(reference)
        dims = min(self.dims, len(r) - 2, len(g) - 2)
        if dims < 1:
            raise VitprintError(f"domias needs more reference images than {len(r)}")
        self.pca_ = PCA(dims, random_state=self.seed).fit(np.concatenate([g, r]))
        zg, zr = self.pca_.transform(g), self.pca_.transform(r)
        spread = float(np.concatenate([zg, zr]).std()) or 1.0
        rng = np.random.default_rng(self.seed)
        self.kde_generated_ = _kde(zg, spread, rng, "generated")
        self.kde_reference_ = _kde(zr, spread, rng, "reference")
        return self

    def features(self, real) -> np.ndarray:
        """``(N, dims)`` PCA features of real images (where the densities live)."""
        return self.pca_.transform(self._features(real))

    def _score(self, real):
        z = self.features(real).T
        return self.kde_generated_.logpdf(z) - self.kde_reference_.logpdf(z), None
