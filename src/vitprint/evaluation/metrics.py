"""Metrics: arrays in, numbers out (scikit-learn does the arithmetic)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, cohen_kappa_score, confusion_matrix, f1_score


def classification_metrics(y_true, y_pred, n_classes: int) -> dict[str, float]:
    """Accuracy, macro-F1 and Cohen's kappa of integer labels."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    labels = list(range(n_classes))
    kappa = cohen_kappa_score(y_true, y_pred, labels=labels)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        # Kappa is undefined (nan) when both raters agree on one class only.
        "kappa": float(0.0 if np.isnan(kappa) else kappa),
    }


def confusion(y_true, y_pred, n_classes: int) -> np.ndarray:
    """``(n_classes, n_classes)`` counts, rows true, columns predicted."""
    return confusion_matrix(y_true, y_pred, labels=list(range(n_classes)))
