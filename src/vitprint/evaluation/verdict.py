"""Controls that can fail, and the one verdict a user reads first.

- **Permutation null**: the AUC each detector reaches when the used/not-used
  labels are shuffled, giving a p-value per detector (Holm-corrected across
  the detectors tested) and, for the verdict, the null distribution of the
  *best* detector's AUC (a max-statistic test: choosing the best of several
  detectors is part of what is tested).
- **Blind baseline**: a cross-validated classifier that separates the used from
  the not-used real images *without the generated images* (thumbnails,
  intensity histogram, noise and sharpness). If it can, the split is
  confounded (different scanners, dates, patients) and a detector counts as
  evidence only where it beats the blind baseline.
- **Verdict**: "Leak detected", "No evidence of a leak" (with the smallest AUC
  this sample could have detected), or "Inconclusive" (confounded split).
- **How much leaked**: used images scoring above the 99th percentile of the
  not-used ones, minus the count expected by chance, with an interval.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

LEAK, NO_EVIDENCE, INCONCLUSIVE, NOT_ASSESSED = "Leak detected", "No evidence of a leak", "Inconclusive", "Not assessed"


def permutation_aucs(values: dict[str, np.ndarray], labels, n_perm: int = 2000, seed: int = 0) -> np.ndarray:
    """``(n_perm, n_detectors)`` ROC-AUCs of every score under shuffled labels (the same shuffles for all)."""
    y = np.asarray(labels, int)
    n1, n0 = int(y.sum()), int((1 - y).sum())
    ranks = np.stack([rankdata(np.asarray(values[n], float)) for n in values])  # (d, n)
    rng = np.random.default_rng(seed)
    perms = np.stack([rng.permutation(y) for _ in range(n_perm)]).astype(np.float64)  # (n_perm, n)
    return (perms @ ranks.T - n1 * (n1 + 1) / 2) / (n1 * n0)


def holm(pvalues: dict[str, float]) -> dict[str, float]:
    """Holm's step-down adjustment (controls the family-wise error rate)."""
    names = sorted(pvalues, key=pvalues.get)
    m, running, out = len(names), 0.0, {}
    for i, n in enumerate(names):
        running = max(running, min(1.0, (m - i) * pvalues[n]))
        out[n] = running
    return out


def crowding(pixels, size: int = 32, others: int = 5000, seed: int = 0) -> np.ndarray:
    """Per image, how alike its two most similar other images among ``pixels`` are (cosine similarity of
    zero-mean ``size`` px thumbnails; against a random ``others`` of them in a large set). ``(N, 2)``.

    Scores that compare an image with the other real images (``align_nn``'s rival margin) or with a set
    of its neighbours depend on this; if the used and the not-used images differ in it (one group drawn
    as runs of neighbouring slices, the other as isolated slices), the split is confounded.
    """
    x = torch.from_numpy(np.asarray(pixels, np.float32))[:, None]
    t = F.adaptive_avg_pool2d(x, size).flatten(1)
    t = t - t.mean(1, keepdim=True)
    t = t / t.norm(dim=1, keepdim=True).clamp_min(1e-6)
    n = len(t)
    pool = np.arange(n) if n <= others else np.random.default_rng(seed).choice(n, others, replace=False)
    out = np.zeros((n, 2), np.float32)
    for start in range(0, n, 1024):
        sim = t[start:start + 1024] @ t[pool].T
        rows = torch.arange(start, min(start + 1024, n))
        sim[rows[:, None] == torch.as_tensor(pool)[None]] = -1.0  # an image is not its own neighbour
        top = sim.topk(min(2, sim.shape[1]), dim=1).values
        out[start:start + len(top), :top.shape[1]] = top.numpy()
    return out


def blind_features(pixels) -> np.ndarray:
    """Per image, what a scanner or cohort difference shows without any generated image.

    An 8x8 thumbnail (layout), a 16-bin intensity histogram, mean and spread,
    the energy of fine detail (noise, sharpness) and how crowded it is by similar
    images of the set (``crowding``). ``(N, S, S)`` uint8 -> ``(N, 86)``.
    """
    x = np.asarray(pixels, np.float32) / 255.0
    n, s, _ = x.shape
    k = s // 8
    thumb = x[:, : k * 8, : k * 8].reshape(n, 8, k, 8, k).mean((2, 4)).reshape(n, 64)
    hist = np.stack([np.histogram(img, bins=16, range=(0, 1))[0] / img.size for img in x])
    lap = x[:, 1:-1, 1:-1] * 4 - x[:, :-2, 1:-1] - x[:, 2:, 1:-1] - x[:, 1:-1, :-2] - x[:, 1:-1, 2:]
    detail = np.stack([lap.std((1, 2)), np.abs(np.diff(x, axis=2)).mean((1, 2))], 1)
    return np.concatenate([thumb, hist, x.mean((1, 2))[:, None], x.std((1, 2))[:, None], detail,
                           crowding(pixels, min(32, s))], 1)


def blind_baseline(pixels, labels, folds: int = 5, seed: int = 0, n_boot: int = 1000) -> dict[str, float]:
    """Cross-validated ROC-AUC (with a bootstrap 95% interval) of telling used from not-used images apart
    from the real images alone."""
    y = np.asarray(labels, int)
    folds = max(2, min(folds, int(min(y.sum(), (1 - y).sum()))))
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    p = cross_val_predict(clf, blind_features(pixels), y, cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
                          method="decision_function")
    auc = float(roc_auc_score(y, p))
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        if len(np.unique(y[idx])) == 2:
            boots.append(roc_auc_score(y[idx], p[idx]))
    lo, hi = (np.quantile(boots, [0.025, 0.975]) if boots else (np.nan, np.nan))
    return {"auc": auc, "auc_low": float(lo), "auc_high": float(hi), "folds": folds}


def leak_estimate(scores, labels, quantile: float = 0.99, n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """How many used images are recognisably in the generated set.

    Count of used images scoring above the ``quantile`` of the not-used ones,
    minus the count expected by chance (the share of not-used images above it),
    with a bootstrap 95% interval; also as a fraction of the used images.
    """
    s, y = np.asarray(scores, float), np.asarray(labels, int)

    def excess(si, yi):
        # The chance rate is what the not-used images themselves show above the bar: with few of them the
        # quantile sits near their maximum and is passed by more than 1 - quantile of any set.
        bar = np.quantile(si[yi == 0], quantile)
        used, chance = si[yi == 1], float((si[yi == 0] > bar).mean())
        return float((used > bar).sum() - chance * len(used))

    point = excess(s, y)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        idx = np.concatenate([rng.choice(np.flatnonzero(y == c), (y == c).sum()) for c in (0, 1)])
        draws.append(excess(s[idx], y[idx]))
    lo, hi = np.quantile(draws, [0.025, 0.975]) if draws else (np.nan, np.nan)
    n_used = int(y.sum())
    return {"count": max(point, 0.0), "count_low": max(float(lo), 0.0), "count_high": max(float(hi), 0.0),
            "fraction": max(point, 0.0) / n_used, "fraction_low": max(float(lo), 0.0) / n_used,
            "fraction_high": max(float(hi), 0.0) / n_used, "used": n_used, "quantile": quantile}


@dataclass
class Verdict:
    """The one answer: what, why, and the numbers behind it."""

    verdict: str
    sentence: str
    primary: str | None = None
    primary_auc: float = float("nan")
    p_value: float = float("nan")  # best-detector (max-statistic) permutation p-value
    detectable_auc: float = float("nan")  # the smallest AUC this sample could call a leak at alpha
    blind_auc: float = float("nan")
    blind_auc_high: float = float("nan")
    confounded: bool = False
    cv_auc: float = float("nan")  # the cross-validated choice's out-of-fold AUC

    def to_dict(self) -> dict:
        return asdict(self)


STRONG_P = 0.01  # below alpha but not below this: "Leak detected", said to be weak evidence


def decide_verdict(values: dict[str, np.ndarray], labels, blind: dict[str, float] | None = None,
                   alpha: float = 0.05, n_perm: int = 2000, seed: int = 0) -> tuple[Verdict, dict[str, dict]]:
    """The verdict from the labelled images' scores, and per detector: AUC, p-value, Holm-adjusted p-value."""
    y = np.asarray(labels, int)
    names = list(values)
    observed = {n: float(roc_auc_score(y, values[n])) for n in names}
    null = permutation_aucs(values, y, n_perm, seed)
    p = {n: float((1 + (null[:, i] >= observed[n] - 1e-12).sum()) / (1 + n_perm)) for i, n in enumerate(names)}
    adjusted = holm(p)
    per = {n: {"auc": observed[n], "p_value": p[n], "p_holm": adjusted[n]} for n in names}
    best_null = null.max(1)
    primary = max(names, key=lambda n: (observed[n], -names.index(n)))
    p_best = float((1 + (best_null >= observed[primary] - 1e-12).sum()) / (1 + n_perm))
    detectable = float(np.quantile(best_null, 1 - alpha))
    v = Verdict(NO_EVIDENCE, "", primary, observed[primary], p_best, detectable)
    if blind is not None:
        v.blind_auc, v.blind_auc_high = blind["auc"], blind["auc_high"]
        v.confounded = blind["auc_low"] > 0.5
    beats_blind = not v.confounded or observed[primary] > v.blind_auc_high
    if p_best < alpha and beats_blind:
        v.verdict = LEAK
        v.sentence = (f"Leak detected: {primary} separates the used from the not-used images with ROC-AUC "
                      f"{observed[primary]:.2f} (permutation p = {p_best:.3g}, best of {len(names)} detectors"
                      + (f"; the blind baseline reaches only {v.blind_auc:.2f}" if v.confounded else "") + ")."
                      + (f" Weak evidence: a p-value this small comes about once in {1 / alpha:.0f} audits where nothing "
                         f"leaked (below {STRONG_P:g}, once in {1 / STRONG_P:.0f})." if p_best >= STRONG_P else ""))
    elif v.confounded:
        v.verdict = INCONCLUSIVE
        v.sentence = (f"Inconclusive (confounded split: the blind baseline separates the sets without any generated "
                      f"image, ROC-AUC {v.blind_auc:.2f} [{blind['auc_low']:.2f}, {blind['auc_high']:.2f}]; the best "
                      f"detector, {primary}, reaches {observed[primary]:.2f}, not above it).")
    else:
        v.sentence = (f"No evidence of a leak (the best detector, {primary}, reaches ROC-AUC {observed[primary]:.2f}, "
                      f"permutation p = {p_best:.3g}; the smallest effect this sample could detect: "
                      f"AUC {detectable:.2f}).")
    return v, per


def confirm_out_of_fold(v: Verdict, cv_auc: float) -> Verdict:
    """A leak must also hold out of fold: the detector chosen inside cross-validation, scored on images
    its choice never saw, must separate them (ROC-AUC above 0.5). The permutation test picks the best
    detector on all images; this second condition can only make "Leak detected" rarer where there is none."""
    v.cv_auc = cv_auc
    held = cv_auc > 0.5
    if v.verdict == LEAK and not held:
        v.verdict = NO_EVIDENCE
        v.sentence = (f"No evidence of a leak: {v.primary} reaches ROC-AUC {v.primary_auc:.2f} on all images "
                      f"(permutation p = {v.p_value:.3g}), but the detector chosen inside cross-validation reaches "
                      f"only {cv_auc:.2f} on the images its choice never saw, so the separation does not hold out "
                      "of fold.")
    else:
        v.sentence += f" The detector chosen inside cross-validation reaches ROC-AUC {cv_auc:.2f} out of fold."
    return v
