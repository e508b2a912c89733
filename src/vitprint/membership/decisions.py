"""From scores to used / not-used decisions, as scikit-learn-shaped estimators.

- ``Threshold``: one score, decide "used" when ``score > threshold_``; fitted on
  labelled development images to maximise Cohen's kappa or to meet a target
  false-positive rate.
- ``Combiner``: select or combine: the best single score or a strongly
  regularised logistic regression over the standardised scores, whichever wins
  an inner cross-validation; thresholded the same way.
- ``select_primary``: the detector whose score separates the labelled images
  best (ROC-AUC; the scores themselves are not fitted on the labels, so this is
  honest on the images it is measured on, and nested inside cross-validation).
- ``cross_validate``: every labelled image decided by thresholds, combiner and
  primary detector fitted on the other folds, never on itself.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import cohen_kappa_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler

from vitprint.errors import VitprintError

log = logging.getLogger(__name__)

MAX_CANDIDATES = 512
DECISIONS = ("auto", "combined")


def _kappa(y, pred) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        k = cohen_kappa_score(y, pred, labels=[0, 1])
    return float(0.0 if np.isnan(k) else k)


def kappas_at(scores, labels, cuts) -> np.ndarray:
    """Cohen's kappa of the decisions ``scores > cut`` for every cut at once, 0 where it is undefined.

    The same numbers, to the last bit, as ``_kappa(labels, scores > cut)`` cut by cut (scikit-learn's
    ``cohen_kappa_score``: one minus the observed disagreements over the chance-expected ones, from the
    2 x 2 confusion counts), in one pass over a ``(cuts, images)`` table instead of one call per cut,
    whose input checks cost more than the counting (a threshold fit tries up to ``MAX_CANDIDATES``).
    """
    s, y = np.asarray(scores, float), np.asarray(labels, int)
    used = s[None, :] > np.asarray(cuts, float)[:, None]  # (cuts, images)
    pos = y == 1
    tp = used[:, pos].sum(1).astype(np.float64)
    fp = used[:, ~pos].sum(1).astype(np.float64)
    n, true1 = float(len(y)), float(pos.sum())
    fn, pred1 = true1 - tp, tp + fp
    expected = (n - pred1) * true1 / n + pred1 * (n - true1) / n  # chance disagreements
    with np.errstate(divide="ignore", invalid="ignore"):
        k = 1 - (fp + fn) / expected
    return np.where(expected == 0, 0.0, k)


def _check_labels(y) -> np.ndarray:
    y = np.asarray(y, int)
    if len(np.unique(y)) < 2:
        raise VitprintError("fitting a decision needs both used (1) and not-used (0) images")
    return y


class Threshold:
    """Decide "used" when ``score > threshold_``.

    ``fit`` maximises Cohen's kappa on the labelled scores (ties: the lower
    threshold) or, with ``target_fpr``, takes the lowest threshold whose
    false-positive rate on the not-used images is at most the target.
    """

    def __init__(self, target_fpr: float | None = None):
        if target_fpr is not None and not 0 <= target_fpr < 1:
            raise VitprintError(f"target FPR must be in [0, 1), got {target_fpr}")
        self.target_fpr = target_fpr

    def fit(self, scores, labels) -> "Threshold":
        s, y = np.asarray(scores, float), _check_labels(labels)
        if self.target_fpr is not None:
            neg = np.sort(s[y == 0])
            allowed = int(np.floor(self.target_fpr * len(neg)))  # not-used images that may lie above t
            self.threshold_ = float(neg[len(neg) - 1 - allowed])
            return self
        uniq = np.unique(s)
        cuts = np.concatenate([[uniq[0] - 1.0], (uniq[:-1] + uniq[1:]) / 2, [uniq[-1]]])
        if len(cuts) > MAX_CANDIDATES:
            cuts = np.unique(np.quantile(cuts, np.linspace(0, 1, MAX_CANDIDATES)))
        kappas = kappas_at(s, y, cuts)
        self.threshold_ = float(cuts[int(np.argmax(kappas))])
        return self

    def predict(self, scores) -> np.ndarray:
        """``(N,)`` 0/1 decisions, 1 = used."""
        return (np.asarray(scores, float) > self.threshold_).astype(int)


class Combiner:
    """Select or combine: the single best score or a logistic regression over them all, whichever
    separates the labelled images better by inner cross-validation; thresholded like a score.

    Both candidates are judged the same way, out of fold: in each inner split the single score with the
    best ROC-AUC on the training part (as ``auto`` picks), and a strongly regularised logistic regression
    over the standardised scores (``C`` small: with a few dozen labelled images a score that carries no
    signal must not pull the combination away from the ones that do) fitted on that part, score the held-out
    part, ranked against their own training scores so that folds pool. The inner splits are repeated
    (``repeats``) and the pooled ROC-AUCs averaged; the regression is kept only when it beats the single
    score (ties: the single score). The choice is made on ROC-AUC, also under ``target_fpr``. A regression
    over many correlated and useless scores fitted on few images loses to the best of them where one
    dominates, and wins where several carry signal; this rule takes whichever the labelled images support.

    The single score is read as it is ("higher = more likely used"); the regression may give a score a
    negative weight (a distance to the generated images less one to other real images is calibration; a
    score that separates the groups the wrong way may also be a confound, which is why the verdict never
    reads the combiner). One score, or fewer labelled images of a group than there are scores (or than 2):
    the single best score, with no inner cross-validation (a regression over more scores than a group has
    images is hard to judge out of fold on so few; a judgement call: on 8 + 8 images and 15 scores it was
    kept and ranked held-out images below the best single score, 0.891 against 0.984 and 0.312 against 0.828).

    Fitted attributes: ``choice_`` (``"logistic"`` or ``"single"``), ``column_`` (the single score's
    column, or None), ``inner_auc_`` (each candidate's inner cross-validated ROC-AUC; empty when not run)
    and the linear rule on standardised scores (``weights``; one-hot when a single score was chosen).
    """

    def __init__(self, C: float = 0.1, target_fpr: float | None = None, seed: int = 0, folds: int = 5,
                 repeats: int = 3):
        self.C, self.target_fpr, self.seed, self.folds, self.repeats = C, target_fpr, seed, folds, repeats

    def _logistic(self, X, y) -> tuple[StandardScaler, np.ndarray, float]:
        """The regression on standardised scores: ``(scaler, weights, intercept)``."""
        scaler = StandardScaler().fit(X)
        lr = LogisticRegression(C=self.C, random_state=self.seed).fit(scaler.transform(X), y)
        return scaler, lr.coef_[0], float(lr.intercept_[0])

    @staticmethod
    def _best_column(X, y) -> int:
        return int(np.argmax([_auc(y, X[:, j]) for j in range(X.shape[1])]))

    def _inner_aucs(self, X, y) -> dict[str, float]:
        n_min = int(min((y == 0).sum(), (y == 1).sum()))
        if n_min < max(2, X.shape[1]) or X.shape[1] == 1:
            return {}
        out = {"single": [], "logistic": []}
        for r in range(self.repeats):
            oof = {k: np.zeros(len(y)) for k in out}
            splits = StratifiedKFold(min(self.folds, n_min), shuffle=True, random_state=self.seed + r).split(X, y)
            for train, test in splits:  # (stratified, so every training part holds both groups)
                j = self._best_column(X[train], y[train])
                scaler, coef, intercept = self._logistic(X[train], y[train])
                lin = lambda rows: scaler.transform(X[rows]) @ coef + intercept  # noqa: E731
                for k, tr, te in (("single", X[train, j], X[test, j]), ("logistic", lin(train), lin(test))):
                    oof[k][test] = _rank_within(tr, te)
            for k in out:
                out[k].append(_auc(y, oof[k]))
        return {k: float(np.mean(v)) for k, v in out.items()}

    def fit(self, features: np.ndarray, labels) -> "Combiner":
        y = _check_labels(labels)
        X = np.asarray(features, float)
        self.inner_auc_ = self._inner_aucs(X, y)
        if self.inner_auc_ and self.inner_auc_["logistic"] > self.inner_auc_["single"]:
            self.scaler_, self.coef_, self.intercept_ = self._logistic(X, y)
            self.column_ = None
        else:
            self.column_ = self._best_column(X, y)
            self.scaler_ = StandardScaler().fit(X)
            self.coef_, self.intercept_ = np.eye(X.shape[1])[self.column_], 0.0
        self.threshold_ = Threshold(self.target_fpr).fit(self.decision_function(X), y)
        return self

    def decision_function(self, features: np.ndarray) -> np.ndarray:
        """``(N,)`` the kept rule's score: log-odds of "used" (logistic), or the chosen score standardised."""
        return self.scaler_.transform(np.asarray(features, float)) @ self.coef_ + self.intercept_

    def predict(self, features: np.ndarray) -> np.ndarray:
        return self.threshold_.predict(self.decision_function(features))

    @property
    def choice_(self) -> str:
        """``"logistic"`` or ``"single"``."""
        return "logistic" if self.column_ is None else "single"

    def kept(self, names: list[str]) -> str:
        """What the rule reads: ``"logistic"`` or ``"single: NAME"`` (``names``: the columns' names)."""
        return self.choice_ if self.column_ is None else f"single: {names[self.column_]}"

    @property
    def weights(self) -> np.ndarray:
        """Weights of the standardised scores (one-hot when one score was chosen)."""
        return self.coef_


def _rank_within(train_scores, test_scores) -> np.ndarray:
    """Each test score's rank among the scores a rule was fitted on, in [0, 1]: out-of-fold scores of rules
    fitted fold by fold sit on different scales, their ranks pool."""
    return np.searchsorted(np.sort(train_scores), test_scores, side="right") / len(train_scores)


def _auc(y, s) -> float:
    return float(roc_auc_score(y, s)) if len(np.unique(y)) == 2 else float("nan")


def deciding_scores(names: list[str], candidates=None) -> list[str]:
    """The scores among ``names`` that may decide: ``candidates`` (default: all)."""
    out = [n for n in names if candidates is None or n in candidates]
    if not out:
        raise VitprintError(f"none of the scores ({', '.join(names)}) may decide: each was cross-fitted or learnt "
                            "from the labels")
    return out


def select_primary(features: dict[str, np.ndarray], labels, candidates=None) -> str:
    """The name of the score with the highest ROC-AUC on these labelled images (first on ties), among
    ``candidates`` (default: all)."""
    y = _check_labels(labels)
    aucs = {n: _auc(y, features[n]) for n in deciding_scores(list(features), candidates)}
    return max(aucs, key=lambda n: (aucs[n], -list(features).index(n)))


def fit_decision(features: dict[str, np.ndarray], labels, decision: str = "auto",
                 target_fpr: float | None = None, seed: int = 0, candidates=None) -> "Decision":
    """Fit the rule that decides unknown images: a primary score's threshold, or the combiner."""
    y = _check_labels(labels)
    names = list(features)
    if decision == "combined":
        names = deciding_scores(names, candidates)
        X = np.stack([features[n] for n in names], 1)
        comb = Combiner(target_fpr=target_fpr, seed=seed).fit(X, y)
        return Decision("combined", names, comb.threshold_.threshold_, comb)
    name = select_primary(features, y, candidates) if decision == "auto" else decision
    if name not in features:
        raise VitprintError(f"decision must be one of {', '.join(DECISIONS + tuple(names))}, got {decision!r}")
    return Decision(name, names, Threshold(target_fpr).fit(features[name], y).threshold_)


@dataclass
class Decision:
    """A fitted rule: which score decides (``primary``), its threshold, the combiner when used."""

    primary: str
    names: list[str]
    threshold: float
    combiner: Combiner | None = None

    def decision_function(self, features: dict[str, np.ndarray]) -> np.ndarray:
        if self.combiner is not None:
            return self.combiner.decision_function(np.stack([features[n] for n in self.names], 1))
        return np.asarray(features[self.primary], float)

    def predict(self, features: dict[str, np.ndarray]) -> np.ndarray:
        return (self.decision_function(features) > self.threshold).astype(int)

    def to_dict(self) -> dict:
        d = {"primary": self.primary, "threshold": self.threshold}
        if self.combiner is not None:
            d["combiner_weights"] = dict(zip(self.names, map(float, self.combiner.weights)))
            d["combiner_choice"] = self.combiner.kept(self.names)
            d["combiner_inner_auc"] = self.combiner.inner_auc_
        return d


@dataclass
class CrossValidated:
    """Out-of-fold scores and decisions for each detector, the combiner and the auto choice."""

    scores: dict[str, np.ndarray]
    decisions: dict[str, np.ndarray]
    folds: int = 0
    auto_choices: list[str] = field(default_factory=list)  # the primary picked in each fold
    combiner_choices: list[str] = field(default_factory=list)  # what the combiner kept in each fold


def cross_validate(features: dict[str, np.ndarray], labels, folds: int = 5, seed: int = 0,
                   target_fpr: float | None = None, candidates=None) -> CrossValidated:
    """Decide every labelled image with rules fitted on the other folds.

    Rows: every score, ``combined`` and ``auto`` (the primary score chosen on
    the training folds, so the choice itself is cross-validated).
    """
    y = np.asarray(labels, int)
    n_min = int(min((y == 0).sum(), (y == 1).sum()))
    if n_min < 2:
        raise VitprintError("cross-validation needs at least 2 used and 2 not-used images")
    if folds > n_min:
        log.warning("%d folds asked for, but the smaller labelled group has %d images: %d folds are used",
                    folds, n_min, n_min)
    folds = min(folds, n_min)
    names = list(features)
    # The combiner reads only the scores that may decide (``candidates``): a cross-fitted score can separate
    # the labelled groups through the reference alone, and a combiner fitted on the labels would learn that.
    combined_names = deciding_scores(names, candidates)
    X = np.stack([features[n] for n in combined_names], 1)
    scores = {n: np.asarray(features[n], float) for n in names}
    scores["combined"] = np.zeros(len(y))
    scores["auto"] = np.zeros(len(y))
    decisions = {n: np.zeros(len(y), int) for n in scores}
    choices, kept = [], []
    # Another fold may pick another primary, or its combiner keep another rule: rows pool as ranks.
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(X, y):
        comb = Combiner(target_fpr=target_fpr, seed=seed).fit(X[train], y[train])
        kept.append(comb.kept(combined_names))
        scores["combined"][test] = _rank_within(comb.decision_function(X[train]), comb.decision_function(X[test]))
        decisions["combined"][test] = comb.predict(X[test])
        for n in names:
            t = Threshold(target_fpr).fit(scores[n][train], y[train])
            decisions[n][test] = t.predict(scores[n][test])
        pick = select_primary({n: scores[n][train] for n in names}, y[train], candidates)
        choices.append(pick)
        scores["auto"][test] = _rank_within(scores[pick][train], scores[pick][test])
        decisions["auto"][test] = decisions[pick][test]
    return CrossValidated(scores, decisions, folds, choices, kept)
