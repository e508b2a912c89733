"""``pair``: supervised scoring of (real image, its nearest generated images) pairs.

With labelled used / not-used images (the challenge's development set) the
question "what does a training image look like next to the generated
images?" can be learnt rather than assumed. For each real image, features of
it and its ``pair_k`` nearest generated images in the ``copy_nn`` embedding:

- the cosine distances to them (the nearest, the gap to the second, the mean):
  a copied image has one generated image much closer than the rest;
- the local match with each of the three nearest (``regions.best_region``: the
  best normalised correlation of a tile of the real image anywhere near the
  same place in the generated one, band-passed), the best of them: generators
  often copy a region, not a whole slice;
- the structural similarity (SSIM, ``kornia``) of the real image with its
  nearest generated image after that tile's shift, whole-image mean and the
  90th percentile of the local map;
- the margins over the rival (as ``align_nn`` judges): how much more alike
  that generated image is to this real image than to the most alike *other*
  real image scored with it, in the embedding and by the local match. A copy's
  source beats every rival; a neighbouring slice of the source does not.

A regularised logistic regression (standardised features) is fitted on the
labelled images. Every labelled image is scored out of fold (by a model fitted
on the other folds: never by one that saw its own label); images without a label
are scored by the model fitted on all labelled ones. Scores that were made
with the labels cannot be tested by shuffling the labels afterwards, so the
verdict never reads them: ``pair`` decides the run file only when named.
"""

from __future__ import annotations

import numpy as np
import torch
from kornia.metrics import ssim
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from vitprint.errors import VitprintError
from vitprint.membership.base import Detector, as_pixels, pixel_hashes
from vitprint.membership.detectors.copy_nn import CopyNN
from vitprint.membership.knn import knn_distances
from vitprint.membership.regions import best_region
from vitprint.membership.registry import register_detector

FEATURES = ("nearest distance", "gap to the second", "mean distance", "best region correlation",
            "SSIM with the nearest", "SSIM 90th percentile", "embedding margin over the rival",
            "region margin over the rival")


@register_detector
class Pair(Detector):
    name = "pair"
    supervised = True
    image_size = 96
    uses_others = True  # the job's other real images are rivals too

    def __init__(self, copy_size: int = 96, pair_k: int = 5, pair_c: float = 1.0, copy_steps: int = 300,
                 copy_width: int = 16, seed: int = 0, cache_dir=None, device: str = "cpu", index: str = "auto"):
        if pair_k < 2:
            raise VitprintError(f"pair_k must be >= 2, got {pair_k}")
        if pair_c <= 0:
            raise VitprintError(f"pair_c must be > 0, got {pair_c}")
        self.image_size, self.k, self.c, self.seed = copy_size, pair_k, pair_c, seed
        # The same embedding as copy_nn (with a cache, trained once for both).
        self.copy = CopyNN(copy_size=copy_size, copy_steps=copy_steps, copy_width=copy_width, seed=seed,
                           cache_dir=cache_dir, device=device, index=index)
        self.model_ = None

    def fit(self, generated, reference=None) -> "Pair":
        self.generated_ = as_pixels(generated)
        self.copy.fit(self.generated_)
        return self

    def fit_like(self, fitted: "Pair", generated, reference=None) -> "Pair":
        """The embedding and the classifier learnt on the labelled images' generated set, on another set."""
        self.generated_ = as_pixels(generated)
        self.copy.fit_like(fitted.copy, self.generated_)
        self.model_ = fitted.model_
        return self

    def features(self, real, others=None) -> tuple[np.ndarray, np.ndarray]:
        """``(N, 8)`` pair features (``FEATURES``) and each image's nearest generated index; ``others``: the
        job's real images not scored here, rivals too."""
        real = as_pixels(real)
        k = min(self.k, len(self.generated_))
        emb = self.copy.embed(real)
        pool, pool_emb = real, emb  # the rivals: the images scored here, then the others
        if others is not None and len(as_pixels(others)):
            pool = np.concatenate([np.asarray(real), np.asarray(as_pixels(others))])
            pool_emb = np.concatenate([emb, self.copy.embed(as_pixels(others))])
        d, idx = knn_distances(emb, self.copy.embeddings_, k=k, metric="cosine",
                               device=self.copy.device, progress=False, index=self.copy.index,
                               **self.copy.index_store())
        gap = d[:, 1] - d[:, 0] if k > 1 else np.zeros(len(d))
        # Rivals: how alike each generated image is to the *other* real images of the job (identical
        # pixels are never rivals). A copy's source beats every rival; a neighbouring slice of the source
        # does not, however close it is in absolute terms.
        same = np.unique(pixel_hashes(pool), return_inverse=True)[1]
        rows = []
        for i in range(len(real)):
            a = np.asarray(real[i])
            regions = [best_region(a, np.asarray(self.generated_[j])) for j in idx[i, :3]]
            best = max(range(len(regions)), key=lambda r: regions[r].ncc)
            g = int(idx[i, best])
            aligned = np.roll(np.asarray(self.generated_[g]), regions[best].shift, (0, 1))
            pair = torch.from_numpy(np.stack([a, aligned]).astype(np.float32) / 255.0)[:, None]
            local = ssim(pair[:1], pair[1:], 7)[0, 0].numpy()
            candidates = np.flatnonzero(same != same[i])  # the possible rivals
            sims = pool_emb @ self.copy.embeddings_[g]  # every real image's cosine similarity with g (unit norm)
            if len(candidates):
                rival = int(candidates[np.argmax(sims[candidates])])
                margin_emb = float(sims[i] - sims[rival])
                margin_region = regions[best].ncc - best_region(np.asarray(pool[rival]), np.asarray(self.generated_[g])).ncc
            else:
                margin_emb, margin_region = float(sims[i]), regions[best].ncc
            rows.append([regions[best].ncc, float(local.mean()), float(np.quantile(local, 0.9)), margin_emb,
                         margin_region])
        feats = np.column_stack([d[:, 0], gap, d.mean(1), np.asarray(rows, np.float64).reshape(-1, 5)])
        return feats.astype(np.float64), idx[:, 0]

    def _classifier(self):
        return make_pipeline(StandardScaler(), LogisticRegression(C=self.c, max_iter=1000))

    def learn(self, feats: np.ndarray, labels) -> "Pair":
        """Fit the classifier on labelled images' features (labels 1 = used, 0 = not used)."""
        y = np.asarray(labels, int)
        if min((y == 1).sum(), (y == 0).sum()) < 2:
            raise VitprintError("pair needs at least 2 used and 2 not-used labelled images")
        self.model_ = self._classifier().fit(feats, y)
        return self

    def _score(self, real, others=None):
        if self.model_ is None:
            raise VitprintError("pair scores only after learning from labelled images (learn())")
        feats, nearest = self.features(real, others)
        return self.model_.decision_function(feats), nearest

    def score_labelled(self, real, labels, folds: int = 5, others=None) -> tuple[np.ndarray, np.ndarray]:
        """Scores of every image in ``real`` (labels 1/0, -1 = unknown): labelled ones out of fold,
        unknown ones by the model fitted on all labelled images (which this detector then keeps)."""
        y = np.asarray(labels, int)
        feats, nearest = self.features(real, others)
        known = np.flatnonzero(y >= 0)
        self.learn(feats[known], y[known])
        scores = self.model_.decision_function(feats)
        folds = max(2, min(folds, int((y[known] == 1).sum()), int((y[known] == 0).sum())))
        for train, test in StratifiedKFold(folds, shuffle=True, random_state=self.seed).split(known, y[known]):
            model = self._classifier().fit(feats[known[train]], y[known[train]])
            scores[known[test]] = model.decision_function(feats[known[test]])
        return np.asarray(scores, np.float64), nearest
