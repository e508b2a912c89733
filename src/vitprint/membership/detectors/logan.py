"""``logan``: a classifier that tells generated images from real images the generator never saw.

LOGAN's black-box idea (Hayes et al., PoPETs 2019): a model that has learnt what
the generator's output looks like, as opposed to real data in general, gives
its training images a higher "generated" probability, because the generator
over-represents them. Here the classifier is a regularised logistic
regression on the thumbnails at ``pixel_size`` reduced to ``logan_dims``
principal components (fitted on both sets), with the classes weighted equally.
Score = its log-odds of "generated". Needs a reference set; a real image that
is also in the reference is scored by a classifier fitted without it.
"""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from vitprint.errors import VitprintError
from vitprint.membership.base import Detector, as_pixels
from vitprint.membership.knn import thumbnails
from vitprint.membership.registry import register_detector


@register_detector
class Logan(Detector):
    name = "logan"
    needs_reference = True
    peer = True

    def __init__(self, pixel_size: int = 64, logan_dims: int = 32, logan_c: float = 1.0, seed: int = 0):
        if logan_dims < 1 or logan_c <= 0:
            raise VitprintError(f"need logan_dims >= 1 and logan_c > 0, got {logan_dims}, {logan_c}")
        self.pixel_size, self.dims, self.c, self.seed = pixel_size, logan_dims, logan_c, seed

    def _features(self, pixels) -> np.ndarray:
        return thumbnails(as_pixels(pixels), self.pixel_size)

    def fit(self, generated, reference=None) -> "Logan":
        if reference is None:
            raise VitprintError("logan needs a reference set (real images the generator never saw)")
        g, r = self._features(generated), self._features(reference)
        dims = min(self.dims, len(g) + len(r) - 1, g.shape[1])
        self.model_ = make_pipeline(PCA(dims, random_state=self.seed), StandardScaler(),
                                    LogisticRegression(C=self.c, class_weight="balanced", max_iter=2000))
        self.model_.fit(np.concatenate([g, r]), np.r_[np.ones(len(g)), np.zeros(len(r))])
        return self

    def _score(self, real):
        return self.model_.decision_function(self._features(real)).astype(np.float64), None
