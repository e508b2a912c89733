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
