"""Figures written to PNG files. Metrics never import this module."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def loss_curve(history: list[dict[str, float]], path: Path, keys=("train_loss", "val_loss")) -> Path:
    """Loss per epoch for each of ``keys`` present in the history."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    epochs = [r["epoch"] for r in history]
    for key in keys:
        if history and key in history[0]:
            ax.plot(epochs, [r[key] for r in history], marker="o", label=key.replace("_", " "))
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def confusion_plot(matrix: np.ndarray, classes: list[str], path: Path, title: str = "") -> Path:
    """A confusion matrix with counts in the cells (rows true, columns predicted)."""
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.2 * n + 2, 1.1 * n + 1.5))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), classes, rotation=30, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = matrix.max() if matrix.size else 0
    for i in range(n):
        for j in range(n):
            ax.text(j, i, int(matrix[i, j]), ha="center", va="center",
                    color="white" if matrix[i, j] > top / 2 else "black")
    if title:
        ax.set_title(title)
    return _save(fig, path)


def image_pairs(inputs: np.ndarray, outputs: np.ndarray, path: Path, titles=("input", "reconstruction"),
                captions: list[str] | None = None) -> Path:
    """Rows of inputs above outputs, ``(N, H, W)`` in [-1, 1] or uint8."""
    n = len(inputs)
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n + 0.4, 3.6), squeeze=False)
    for j in range(n):
        for i, imgs in enumerate((inputs, outputs)):
            ax = axes[i, j]
            img = np.asarray(imgs[j], dtype=np.float32)
            lo, hi = (0, 255) if np.asarray(imgs).dtype == np.uint8 else (-1, 1)
            ax.imshow(img, cmap="gray", vmin=lo, vmax=hi)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(titles[i])
            if i == 1 and captions:
                ax.set_xlabel(captions[j], fontsize=7)
    return _save(fig, path)


def roc_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, log: bool = False) -> Path:
    """ROC curves ``name -> (fpr, tpr)``; ``log`` puts both axes on log scale (low-FPR view)."""
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    for name, (fpr, tpr) in curves.items():
        ax.plot(fpr, tpr, label=name, lw=1.5)
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
        lo = 1e-3
        ax.set_xlim(lo, 1)
        ax.set_ylim(lo, 1.05)
        ax.plot([lo, 1], [lo, 1], "k:", lw=1, label="chance")
    else:
        ax.plot([0, 1], [0, 1], "k:", lw=1, label="chance")
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title("ROC, log axes" if log else "ROC")
    return _save(fig, path)


def score_histograms(scores: dict[str, np.ndarray], labels: np.ndarray, path: Path) -> Path:
    """One panel per score: the distribution for used vs not-used images."""
    n = len(scores)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 2.8), squeeze=False)
    for ax, (name, s) in zip(axes[0], scores.items()):
        bins = np.histogram_bin_edges(s, bins=20)
        ax.hist(s[labels == 1], bins=bins, alpha=0.6, label="used", color="tab:red")
        ax.hist(s[labels == 0], bins=bins, alpha=0.6, label="not used", color="tab:blue")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("score (higher = more likely used)", fontsize=7)
    axes[0][0].legend(fontsize=7)
    return _save(fig, path)


def metric_vs_size(table: dict[str, dict[int, tuple[float, float, float]]], path: Path, ylabel: str = "ROC-AUC",
                   title: str = "") -> Path:
    """``detector -> {size: (mean, low, high)}`` as lines with error bars, size on a log axis."""
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for name, by_size in table.items():
        sizes = sorted(by_size)
        m = np.array([by_size[s][0] for s in sizes])
        lo = np.array([by_size[s][1] for s in sizes])
        hi = np.array([by_size[s][2] for s in sizes])
        ax.errorbar(sizes, m, yerr=np.clip([m - lo, hi - m], 0, None), marker="o", capsize=3, label=name)
    ax.axhline(0.5, color="k", ls=":", lw=1)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("member-set size")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def metric_vs_copy_rate(points: dict[str, list[tuple[float, float, float, float, bool]]], path: Path,
                        peers=(), ylabel: str = "held-out ROC-AUC", title: str = "") -> Path:
    """``detector -> [(copy rate, mean, low, high, null cell)]``: one marker per cell (hollow for a null
    cell), an error bar where the cell has an interval, the peers dashed; chance dotted."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    rates = [p[0] for pts in points.values() for p in pts]
    dodge = 0.012 * max(max(rates) - min(rates), 0.05)  # side by side: cells share a copy rate
    for k, (name, pts) in enumerate(points.items()):
        colour = f"C{k % 10}"
        for null in (False, True):
            sel = [p for p in pts if bool(p[4]) == null]
            if not sel:
                continue
            x, m, lo, hi = (np.array([p[i] for p in sel], float) for i in range(4))
            x = x + (k - (len(points) - 1) / 2) * dodge
            lo, hi = np.where(np.isnan(lo), m, lo), np.where(np.isnan(hi), m, hi)
            bars = ax.errorbar(x, m, yerr=np.clip([m - lo, hi - m], 0, None), fmt="s" if name in peers else "o", capsize=2,
                               color=colour, mfc="none" if null else colour, alpha=0.8, ms=5, elinewidth=0.7,
                               label=None if null else name + (" (peer)" if name in peers else ""))
            if name in peers:
                for line in bars[2]:
                    line.set_linestyle("--")
    ax.axhline(0.5, color="k", ls=":", lw=1)
    ax.set_xlabel("copy rate of the generated set (hollow: null-generator cells)")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return _save(fig, path)
