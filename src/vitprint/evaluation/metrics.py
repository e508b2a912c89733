"""Metrics: arrays in, numbers out (scikit-learn does the arithmetic)."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn import config_context
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    adjusted_rand_score,
    auc,
    average_precision_score,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)


def kappa(y_true, y_pred, labels=(0, 1)) -> float:
    """Cohen's kappa; 0 where it is undefined (both raters use one class only)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        k = cohen_kappa_score(y_true, y_pred, labels=list(labels))
    return float(0.0 if np.isnan(k) else k)


def classification_metrics(y_true, y_pred, n_classes: int) -> dict[str, float]:
    """Accuracy, macro-F1 and Cohen's kappa of integer labels."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    labels = list(range(n_classes))
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "kappa": kappa(y_true, y_pred, labels),
    }


def attribution_metrics(y_true, y_pred, n_classes: int, n_boot: int = 1000, seed: int = 0,
                        level: float = 0.95) -> dict:
    """Accuracy, macro-F1, Cohen's kappa and the adjusted Rand index of integer subset labels, the confusion
    matrix, and percentile bootstrap intervals of accuracy and macro-F1 (resampling images)."""
    y_true, y_pred = np.asarray(y_true, int), np.asarray(y_pred, int)
    out = {"metrics": {**classification_metrics(y_true, y_pred, n_classes),
                       "adjusted_rand": float(adjusted_rand_score(y_true, y_pred)), "n": int(len(y_true))},
           "confusion": confusion(y_true, y_pred, n_classes).tolist(), "intervals": {}}
    if n_boot > 0 and len(y_true):
        idx = np.random.default_rng(seed).integers(0, len(y_true), (n_boot, len(y_true)))
        t, p = y_true[idx], y_pred[idx]
        f1 = []
        for c in range(n_classes):  # per class from counts; 0 where the class is absent from both, as sklearn's
            tp, fp, fn = ((t == c) & (p == c)).sum(1), ((t != c) & (p == c)).sum(1), ((t == c) & (p != c)).sum(1)
            den = 2 * tp + fp + fn
            f1.append(np.divide(2 * tp, den, out=np.zeros(n_boot), where=den > 0))
        alpha = (1 - level) / 2
        for key, draws in (("accuracy", (t == p).mean(1)), ("macro_f1", np.mean(f1, 0))):
            out["intervals"][key] = (float(np.quantile(draws, alpha)), float(np.quantile(draws, 1 - alpha)))
    return out


def confusion(y_true, y_pred, n_classes: int) -> np.ndarray:
    """``(n_classes, n_classes)`` counts, rows true, columns predicted."""
    return confusion_matrix(y_true, y_pred, labels=list(range(n_classes)))


def tpr_at_fpr(y_true, scores, fpr_target: float) -> float:
    """The highest true-positive rate at a false-positive rate of at most ``fpr_target``."""
    fpr, tpr, _ = roc_curve(y_true, scores)
    return _tpr_at(fpr, tpr, fpr_target)


def _tpr_at(fpr, tpr, fpr_target: float) -> float:
    ok = fpr <= fpr_target + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def binary_metrics(y_true, y_pred, scores=None) -> dict[str, float]:
    """Membership metrics of 0/1 decisions (and, with ``scores``, threshold-free ones).

    Label 1 means "used for training". With one class only in ``y_true`` the
    threshold-free metrics are nan.
    """
    y_true, y_pred = np.asarray(y_true, int), np.asarray(y_pred, int)
    tn, fp, fn, tp = confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel()
    out = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "precision": float(precision_score(y_true, y_pred, zero_division=0)),
        "recall": float(recall_score(y_true, y_pred, zero_division=0)),
        "f1": float(f1_score(y_true, y_pred, zero_division=0)),
        "kappa": kappa(y_true, y_pred),
        "tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp),
    }
    if scores is not None:
        both = len(np.unique(y_true)) == 2
        s = np.asarray(scores, float)
        out["roc_auc"] = float(roc_auc_score(y_true, s)) if both else float("nan")
        out["average_precision"] = float(average_precision_score(y_true, s)) if both else float("nan")
        out["tpr_at_1pct_fpr"] = tpr_at_fpr(y_true, s, 0.01) if both else float("nan")
        out["tpr_at_0.1pct_fpr"] = tpr_at_fpr(y_true, s, 0.001) if both else float("nan")
    return out



def rates_from_counts(tn, fp, fn, tp) -> dict[str, np.ndarray]:
    """Accuracy, precision, recall, F1 and Cohen's kappa from confusion counts (arrays: many resamples
    at once), with ``binary_metrics``' conventions: 0 where a ratio or kappa is undefined. The
    bootstrap reads these instead of five validated scikit-learn calls per resample; a test holds
    them equal to scikit-learn's."""
    tn, fp, fn, tp = (np.asarray(v, float) for v in (tn, fp, fn, tp))
    n = tn + fp + fn + tp

    def ratio(a, b):
        return np.divide(a, b, out=np.zeros_like(a), where=b > 0)

    accuracy = ratio(tp + tn, n)
    expected = ratio((tp + fp) * (tp + fn) + (tn + fn) * (tn + fp), n * n)  # chance agreement
    return {"accuracy": accuracy, "precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn),
            "f1": ratio(2 * tp, 2 * tp + fp + fn), "kappa": ratio(accuracy - expected, 1 - expected)}


def bootstrap_intervals(y_true, y_pred, scores=None, n_boot: int = 1000, seed: int = 0,
                        level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of every metric of ``binary_metrics`` (resampling images)."""
    y_true, y_pred = np.asarray(y_true, int), np.asarray(y_pred, int)
    s = None if scores is None else np.asarray(scores, float)
    rng = np.random.default_rng(seed)
    n = len(y_true)
    idx = rng.integers(0, n, (n_boot, n))
    cell = 2 * y_true[idx] + y_pred[idx]  # 0 tn, 1 fp, 2 fn, 3 tp
    counts = [(cell == c).sum(1) for c in range(4)]
    draws = {k: list(v) for k, v in rates_from_counts(*counts).items()}
    if s is not None:
        with config_context(skip_parameter_validation=True, assume_finite=True):
            for row in idx:
                y, v = y_true[row], s[row]
                if y.min() == y.max():  # one class only: the threshold-free metrics are undefined
                    m = dict.fromkeys(("roc_auc", "average_precision", "tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr"), np.nan)
                else:
                    fpr, tpr, _ = roc_curve(y, v)
                    m = {"roc_auc": auc(fpr, tpr), "average_precision": average_precision_score(y, v),
                         "tpr_at_1pct_fpr": _tpr_at(fpr, tpr, 0.01), "tpr_at_0.1pct_fpr": _tpr_at(fpr, tpr, 0.001)}
                for key, val in m.items():
                    draws.setdefault(key, []).append(float(val))
    alpha = (1 - level) / 2
    out = {}
    for key, vals in draws.items():
        v = np.asarray(vals, float)
        v = v[~np.isnan(v)]
        out[key] = (float(np.quantile(v, alpha)), float(np.quantile(v, 1 - alpha))) if len(v) else (float("nan"),) * 2
    return out


def auc_interval(y_true, scores, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                 min_per_class: int = 5) -> tuple[float, float]:
    """Percentile bootstrap interval of the ROC-AUC, resampling the positives and the negatives apart (each
    resample keeps both classes at their sizes, so every draw has an AUC). ``nan`` with fewer than
    ``min_per_class`` images in a class: a handful that separate perfectly resample to [1, 1], which says
    nothing."""
    y, s = np.asarray(y_true, int), np.asarray(scores, float)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    if min(len(pos), len(neg)) < max(1, min_per_class):
        return float("nan"), float("nan")
    from scipy.stats import mannwhitneyu

    rng = np.random.default_rng(seed)
    a, b = s[rng.choice(pos, (n_boot, len(pos)))], s[rng.choice(neg, (n_boot, len(neg)))]
    # The Mann-Whitney U of the positives over the negatives, per resample, is the AUC times n_pos * n_neg.
    draws = mannwhitneyu(a, b, axis=1, method="asymptotic").statistic / (len(pos) * len(neg))
    alpha = (1 - level) / 2
    return float(np.quantile(draws, alpha)), float(np.quantile(draws, 1 - alpha))


def metric_table(results: dict[str, dict], keys=("accuracy", "kappa", "f1", "roc_auc", "tpr_at_1pct_fpr")) -> str:
    """A plain-text table: one row per detector, each metric with its 95% interval."""
    header = ["detector", *keys]
    rows = [header]
    for name, r in results.items():
        cells = [name]
        for k in keys:
            v = r["metrics"].get(k, float("nan"))
            lo, hi = r.get("intervals", {}).get(k, (float("nan"), float("nan")))
            cells.append(f"{v:.3f} [{lo:.2f}, {hi:.2f}]" if not np.isnan(lo) else f"{v:.3f}")
        rows.append(cells)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)
