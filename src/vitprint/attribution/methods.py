"""Three ways to say which subset's generator made each image, and a "none of these" outcome.

Every method has the scikit-learn shape: ``fit(...)`` returns self and
``predict_proba(features)`` returns ``(N, K)`` probabilities, one column per
subset in ``subsets`` order.

- ``nearest``: a k-nearest-neighbour vote among the real images in the anatomy
  block (a generator reproduces the patients it saw). Needs only the real subsets.
- ``classifier``: a regularised logistic regression on all features, trained
  on labelled generated images (a development set); it learns whatever tells
  the generators apart, the anatomy they copy and the texture they leave.
- ``cluster``: unsupervised. The generated pool is split into K groups (a
  Gaussian mixture on the features' leading principal components), and groups
  are matched one to one with subsets (Hungarian assignment) by how strongly
  each group's images vote for each subset in ``nearest``.

``NoneOfThese`` flags an image whose best correlation with any real image is
lower than what ``1 - rate`` of images known to come from one of the
generators reach (the development set's, else the real images' own
leave-one-out correlations, which is stated as the weaker calibration).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from vitprint.attribution.features import THUMB
from vitprint.errors import VitprintError

ANATOMY = THUMB * THUMB  # the anatomy block's width at the front of every feature vector
METHODS = ("nearest", "classifier", "cluster")


def _check_labels(labels, n_subsets: int, what: str) -> np.ndarray:
    y = np.asarray(labels, int)
    present = np.unique(y)
    if len(present) < n_subsets:
        raise VitprintError(f"{what} must hold images of every subset; {n_subsets - len(present)} subset(s) have none")
    return y


class NearestSubset:
    """k-nearest-neighbour vote among the real images, by anatomy (cosine)."""

    def __init__(self, k: int = 5):
        if k < 1:
            raise VitprintError(f"k must be >= 1, got {k}")
        self.k = k

    def fit(self, real_features: np.ndarray, real_labels, n_subsets: int) -> "NearestSubset":
        y = _check_labels(real_labels, n_subsets, "the real images")
        k = min(self.k, int(np.bincount(y).min()))
        self.knn_ = KNeighborsClassifier(n_neighbors=k).fit(real_features[:, :ANATOMY], y)
        return self

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        return self.knn_.predict_proba(features[:, :ANATOMY])


class EmbeddingClassifier:
    """Logistic regression on standardised features, trained on labelled generated images."""

    def __init__(self, c: float = 0.1, seed: int = 0):
        if c <= 0:
            raise VitprintError(f"the regularisation C must be > 0, got {c}")
        self.c, self.seed = c, seed

    def fit(self, features: np.ndarray, labels, n_subsets: int) -> "EmbeddingClassifier":
        y = _check_labels(labels, n_subsets, "the labelled generated images")
        self.model_ = make_pipeline(StandardScaler(), LogisticRegression(C=self.c, max_iter=5000,
                                                                        random_state=self.seed))
        self.model_.fit(features, y)
        return self

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        return self.model_.predict_proba(features)


class ClusterMatch:
    """Gaussian mixture of the pool, its K groups matched one to one with the subsets."""

    def __init__(self, dims: int = 16, seed: int = 0):
        self.dims, self.seed = dims, seed

    def fit(self, features: np.ndarray, votes: np.ndarray) -> "ClusterMatch":
        """``features`` of the pool and ``votes`` ``(N, K)``: how strongly each image points at each subset."""
        n, k = votes.shape
        if n < 2 * k:
            raise VitprintError(f"clustering {n} generated images into {k} groups needs at least {2 * k}")
        dims = max(1, min(self.dims, n - 1, features.shape[1]))
        self.pca_ = make_pipeline(StandardScaler(), PCA(dims, random_state=self.seed)).fit(features)
        self.gmm_ = GaussianMixture(k, covariance_type="diag", n_init=3, reg_covar=1e-3,
                                    random_state=self.seed).fit(self.pca_.transform(features))
        groups = self.gmm_.predict_proba(self.pca_.transform(features))
        cost = -(groups.T @ votes)  # (groups, subsets): how much each group votes for each subset
        rows, cols = linear_sum_assignment(cost)
        self.order_ = np.empty(k, int)  # subset -> group
        self.order_[cols] = rows
        return self

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        return self.gmm_.predict_proba(self.pca_.transform(features))[:, self.order_]


def best_correlation(features: np.ndarray, real_features: np.ndarray, exclude_self: bool = False) -> np.ndarray:
    """``(N,)`` the highest anatomy correlation of each image with any real image (itself left out with
    ``exclude_self``, when ``features`` are the real images)."""
    sims = features[:, :ANATOMY] @ real_features[:, :ANATOMY].T
    if exclude_self:
        np.fill_diagonal(sims, -np.inf)
    return sims.max(1)


class NoneOfThese:
    """Calls an image "none of these" when its best correlation with the real images is below the
    ``rate`` quantile of images known to come from the subsets' generators."""

    def __init__(self, rate: float = 0.01):
        if not 0 < rate < 1:
            raise VitprintError(f"the none-of-these rate must be in (0, 1), got {rate}")
        self.rate = rate

    def fit(self, known: np.ndarray, source: str) -> "NoneOfThese":
        """``known``: best correlations of images that do come from one of the subsets; ``source`` says which."""
        if len(known) < 2:
            raise VitprintError("calibrating 'none of these' needs at least 2 images known to belong to a subset")
        self.threshold_ = float(np.quantile(known, self.rate))
        self.source_ = source
        return self

    def predict(self, best: np.ndarray) -> np.ndarray:
        return np.asarray(best) < self.threshold_
