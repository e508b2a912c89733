"""From scores to used / not-used decisions.

- A threshold per score fitted on labelled development images: maximise
  Cohen's kappa, or meet a target false-positive rate.
- A logistic combiner over all scores (standardised), thresholded the same way.
- With no labels, a balanced split: the higher-scoring half is called "used".

Development metrics are cross-validated: every image is decided by a threshold
(and combiner) fitted on the other folds, never on itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from vitprint.errors import VitprintError
from vitprint.evaluation.metrics import kappa

MAX_CANDIDATES = 512


def fit_threshold(scores, labels, target_fpr: float | None = None) -> float:
    """The threshold ``t`` (decide "used" when ``score > t``) fitted on labelled scores.

    Maximises Cohen's kappa (ties: the lower threshold), or, with
    ``target_fpr``, is the lowest threshold whose false-positive rate on the
    non-members is at most the target.
    """
    s, y = np.asarray(scores, float), np.asarray(labels, int)
    if len(np.unique(y)) < 2:
        raise VitprintError("fitting a threshold needs both used (1) and not-used (0) images")
    if target_fpr is not None:
        if not 0 <= target_fpr < 1:
            raise VitprintError(f"target FPR must be in [0, 1), got {target_fpr}")
        neg = np.sort(s[y == 0])
        allowed = int(np.floor(target_fpr * len(neg)))  # negatives that may lie above t
        return float(neg[len(neg) - 1 - allowed])
    uniq = np.unique(s)
    cuts = np.concatenate([[uniq[0] - 1.0], (uniq[:-1] + uniq[1:]) / 2, [uniq[-1]]])
    if len(cuts) > MAX_CANDIDATES:
        cuts = np.unique(np.quantile(cuts, np.linspace(0, 1, MAX_CANDIDATES)))
    kappas = np.asarray([kappa(y, (s > t).astype(int)) for t in cuts])
    return float(cuts[int(np.argmax(kappas))])


def balanced_threshold(scores) -> float:
    """The median: half the images are called "used" (for data with no labels)."""
    return float(np.median(np.asarray(scores, float)))


class Combiner:
    """Logistic regression over standardised scores; ``score`` is the log-odds of "used"."""

    def __init__(self, seed: int = 0):
        self.model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, random_state=seed))

    def fit(self, features: np.ndarray, labels) -> "Combiner":
        self.model.fit(features, np.asarray(labels, int))
        return self

    def score(self, features: np.ndarray) -> np.ndarray:
        return self.model.decision_function(features)

    @property
    def weights(self) -> np.ndarray:
        return self.model[-1].coef_[0]


@dataclass
class CrossValidated:
    """Out-of-fold scores and decisions for each detector (and the combiner)."""

    scores: dict[str, np.ndarray]
    decisions: dict[str, np.ndarray]


def cross_validate(features: dict[str, np.ndarray], labels, folds: int = 5, seed: int = 0,
                   target_fpr: float | None = None) -> CrossValidated:
    """Decide every labelled image with thresholds fitted on the other folds."""
    y = np.asarray(labels, int)
    n_min = int(min((y == 0).sum(), (y == 1).sum()))
    if n_min < 2:
        raise VitprintError("cross-validation needs at least 2 used and 2 not-used images")
    folds = min(folds, n_min)
    names = list(features)
    X = np.stack([features[n] for n in names], 1)
    scores = {n: np.asarray(features[n], float) for n in names}
    scores["combined"] = np.zeros(len(y))
    decisions = {n: np.zeros(len(y), int) for n in scores}
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(X, y):
        comb = Combiner(seed).fit(X[train], y[train])
        scores["combined"][test] = comb.score(X[test])
        for n in names + ["combined"]:
            train_scores = comb.score(X[train]) if n == "combined" else scores[n][train]
            t = fit_threshold(train_scores, y[train], target_fpr)
            decisions[n][test] = (scores[n][test] > t).astype(int)
    return CrossValidated(scores, decisions)
