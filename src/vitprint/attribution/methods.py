"""Three ways to say which subset's generator made each image, and a "none of these" outcome.

Every method has the scikit-learn shape: ``fit(...)`` returns self and
``predict_proba(features)`` returns ``(N, K)`` probabilities, one column per
subset in ``subsets`` order.

- ``nearest``: a k-nearest-neighbour vote among the real images by registered
  correlation (the images' best normalised correlation at 64 px over shifts
  of up to ~9% of the field of view: a generator reproduces the patients it saw,
  rarely in the same place). Needs only the real subsets.
- ``classifier``: a regularised logistic regression on all features, trained
  on labelled generated images (a development set); it learns whatever tells
  the generators apart, the anatomy they copy and the texture they leave.
- ``cluster``: unsupervised. The generated pool is split into K groups (a
  Gaussian mixture on the features' leading principal components), and groups
  are matched one to one with subsets (Hungarian assignment) by how strongly
  each group's images vote for each subset in ``nearest``.

``NoneOfThese`` flags an image that is less typical than ``1 - rate`` of the
images known to come from one of the generators. With labelled generated
images, typicality is the closeness to them in the features (an image from
another generator carries another scanner's texture and another generator's
traces, whatever it shows); the labelled images' own leave-one-out values
calibrate it, and pool images from the same generators are exchangeable with
them, so about ``rate`` of those are flagged. Without them, the best
registered correlation with any real image stands in, calibrated on the real
images' correlations with each other, which is stated as the weaker calibration.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import NearestNeighbors
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from vitprint.attribution.features import THUMB, Described
from vitprint.errors import VitprintError

ANATOMY = THUMB * THUMB  # the anatomy block's width at the front of every feature vector
METHODS = ("nearest", "classifier", "cluster")
SHIFT = 0.09  # the largest shift searched each way, as a share of the field of view
CANDIDATES = 32  # real images per generated image that the registered correlation is computed for


def _unit(x: torch.Tensor, dim: int) -> torch.Tensor:
    return F.normalize(x - x.mean(dim, keepdim=True), dim=dim)


def _crops(x: torch.Tensor, shift: int) -> torch.Tensor:
    """``(N, 1, s, s)`` -> ``(N, d)``: the centre, ``shift`` px in from each side, zero-mean and unit-norm."""
    inner = x.shape[-1] - 2 * shift
    return _unit(x[:, 0, shift:shift + inner, shift:shift + inner].flatten(1), 1)


def _windows(x: torch.Tensor, shift: int) -> torch.Tensor:
    """``(M, 1, s, s)`` -> ``(M, d, P)``: every window of the centre's size, zero-mean and unit-norm."""
    return _unit(F.unfold(x, x.shape[-1] - 2 * shift), 1)


def registered_correlation(fine: np.ndarray, real_fine: np.ndarray, exclude_self: bool = False,
                           candidates: int = CANDIDATES, chunk: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Each image's best normalised correlation with its ``candidates`` most similar real images, over shifts
    of up to ``SHIFT`` of the field of view: ``(N, s, s)`` and ``(M, s, s)`` images (``Described.fine``) in,
    ``(N, C)`` correlations and ``(N, C)`` real indices out, best first. The candidates come from the same
    search on 16 px thumbnails against every real image (cheap, and a shift does not hide the source as it
    does from a plain thumbnail comparison). With ``exclude_self`` (the images are the real ones) an image
    is never its own candidate."""
    a = torch.from_numpy(np.asarray(fine, np.float32))[:, None]
    b = torch.from_numpy(np.asarray(real_fine, np.float32))[:, None]
    c = min(candidates, len(b) - (1 if exclude_self else 0))
    if c < 1:
        raise VitprintError("comparing with the real images needs at least one other real image")
    coarse_shift = 2  # of 16 px: 12% of the field of view
    crops16 = _crops(F.adaptive_avg_pool2d(a, 16), coarse_shift)
    windows16 = _windows(F.adaptive_avg_pool2d(b, 16), coarse_shift)
    rows = max(1, 2 ** 26 // max(1, windows16.numel()))  # about 256 MB of correlations at a time
    cand = torch.empty(len(a), c, dtype=torch.long)
    for s in range(0, len(a), rows):
        coarse = torch.einsum("nd,mdp->nmp", crops16[s:s + rows], windows16).amax(2)
        if exclude_self:
            own = torch.arange(s, min(s + rows, len(a)))
            coarse[own - s, own] = -np.inf
        cand[s:s + rows] = coarse.topk(c, dim=1).indices
    shift = max(1, round(SHIFT * a.shape[-1]))
    crop, inner = _crops(a, shift), a.shape[-1] - 2 * shift
    best = torch.empty(len(a), c)
    for s in range(0, len(a), chunk):
        idx = cand[s:s + chunk]
        windows = _windows(b[idx.flatten()], shift).view(len(idx), c, inner * inner, -1)
        best[s:s + chunk] = torch.einsum("nd,ncdp->ncp", crop[s:s + chunk], windows).amax(2)
    order = best.argsort(1, descending=True)
    return best.gather(1, order).numpy(), cand.gather(1, order).numpy()


def _check_labels(labels, n_subsets: int, what: str) -> np.ndarray:
    y = np.asarray(labels, int)
    present = np.unique(y)
    if len(present) < n_subsets:
        raise VitprintError(f"{what} must hold images of every subset; {n_subsets - len(present)} subset(s) have none")
    return y


class NearestSubset:
    """k-nearest-neighbour vote among the real images, by registered correlation.

    Each of the ``k`` best-correlated real images votes with weight ``exp((r - r_best) / tau)``: a copy's
    source, clearly above the rest, decides alone; several about equally close real images share the vote.
    """

    def __init__(self, k: int = 5, tau: float = 0.01):
        if k < 1:
            raise VitprintError(f"k must be >= 1, got {k}")
        if tau <= 0:
            raise VitprintError(f"tau must be > 0, got {tau}")
        self.k, self.tau = k, tau

    def fit(self, real: Described, real_labels, n_subsets: int) -> "NearestSubset":
        self.labels_ = _check_labels(real_labels, n_subsets, "the real images")
        self.k_ = min(self.k, int(np.bincount(self.labels_).min()))
        self.real_, self.n_subsets_ = real.fine, n_subsets
        return self

    def predict_proba(self, images: Described) -> np.ndarray:
        """``(N, K)``: each subset's share of the weighted vote of each image's ``k`` best-correlated real images."""
        corr, idx = registered_correlation(images.fine, self.real_)
        votes = self.labels_[idx[:, :self.k_]]
        weight = np.exp((corr[:, :self.k_] - corr[:, :1]) / self.tau)
        weight /= weight.sum(1, keepdims=True)
        return np.stack([(weight * (votes == s)).sum(1) for s in range(self.n_subsets_)], 1)


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


def best_correlation(images: Described, real: Described, exclude_self: bool = False) -> np.ndarray:
    """``(N,)`` the highest registered correlation of each image with any real image (itself left out with
    ``exclude_self``, when the images are the real ones)."""
    return registered_correlation(images.fine, real.fine, exclude_self)[0][:, 0]


def typicality(known: np.ndarray, images: np.ndarray | None = None, k: int = 5, dims: int = 16
               ) -> tuple[np.ndarray, np.ndarray | None]:
    """How typical each image is of the ``known`` images (features of labelled generated images): minus the
    mean distance to its ``k`` nearest known images, with the anatomy block reduced to its ``dims`` leading
    principal components and the texture block standardised, each block weighted to the same total variance
    (1024 anatomy columns would otherwise drown 22 texture ones). Returns the known images' own values
    (each image's neighbours exclude itself; the scaling and components are fitted on all known images)
    and the ``images``' values."""
    n = len(known)
    if n < 3:
        raise VitprintError(f"measuring typicality needs at least 3 labelled generated images, got {n}")
    k = min(k, n - 1)
    blocks = [make_pipeline(StandardScaler(), PCA(max(1, min(dims, n - 1)), random_state=0)).fit(known[:, :ANATOMY]),
              StandardScaler().fit(known[:, ANATOMY:])]

    def embed(x):
        parts = [b.transform(x[:, :ANATOMY] if i == 0 else x[:, ANATOMY:]) for i, b in enumerate(blocks)]
        return np.concatenate([v / np.sqrt(max(float(ref.var(0).sum()), 1e-12)) for v, ref in zip(parts, refs)], 1)

    refs = [blocks[0].transform(known[:, :ANATOMY]), blocks[1].transform(known[:, ANATOMY:])]
    ref = embed(known)
    neighbours = NearestNeighbors(n_neighbors=k + 1).fit(ref)
    own = -neighbours.kneighbors(ref)[0][:, 1:].mean(1)  # the first neighbour is the image itself
    if images is None:
        return own, None
    return own, -neighbours.kneighbors(embed(images), n_neighbors=k)[0].mean(1)


class NoneOfThese:
    """Calls an image "none of these" when its typicality (or best correlation with the real images) is
    below the ``rate`` quantile of images known to come from the subsets' generators."""

    def __init__(self, rate: float = 0.01):
        if not 0 < rate < 1:
            raise VitprintError(f"the none-of-these rate must be in (0, 1), got {rate}")
        self.rate = rate

    def fit(self, known: np.ndarray, source: str) -> "NoneOfThese":
        """``known``: the values of images that do come from one of the subsets; ``source`` says which."""
        if len(known) < 2:
            raise VitprintError("calibrating 'none of these' needs at least 2 images known to belong to a subset")
        self.threshold_ = float(np.quantile(known, self.rate))
        self.source_ = source
        return self

    def predict(self, best: np.ndarray) -> np.ndarray:
        return np.asarray(best) < self.threshold_
