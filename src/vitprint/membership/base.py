"""The shape every membership detector has (the scikit-learn estimator shape).

``fit(generated, reference=None)`` returns self; ``score_samples(real)`` returns
``(N,)`` scores, higher = more likely used for training. Images are uint8
``(N, S, S)`` arrays (memory maps included) or an ``ImageSet``.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from vitprint.errors import VitprintError


def as_pixels(images) -> Any:
    """uint8 ``(N, S, S)`` pixels of an ImageSet or an array (memory maps stay memory maps)."""
    pixels = getattr(images, "pixels", images)
    if getattr(pixels, "ndim", None) != 3:
        raise VitprintError(f"images must be (N, S, S) uint8 pixels, got shape {getattr(pixels, 'shape', None)}")
    return pixels


class Detector(ABC):
    """Base class. Subclasses set ``name`` and implement ``fit`` and ``_score``.

    Class attributes a detector may set:

    - ``needs_reference``: it cannot work without a reference set.
    - ``needs_autoencoder``: it scores with the job's trained ViT autoencoder
      (its constructor takes ``autoencoder``).
    - ``calibratable``: a ``<name>_cal`` variant (the same score measured
      against the reference set, subtracted) makes sense.
    - ``peer``: implemented from another paper, as a baseline to compare with.
    - ``supervised``: it learns from labelled real images too (``score_labelled(real, labels, folds)``
      scores labelled ones out of fold); its scores are never read by the verdict.
    - ``image_size``: the size it wants images read at (None = the job's).
    - ``uses_others``: it judges each real image against the other real images too (``_score(real,
      others)``, and ``score_labelled(..., others=)`` for a supervised one): ``others`` are the job's real
      images that this call does not score (the other phase's).
    """

    name: str = ""
    needs_reference: bool = False
    needs_autoencoder: bool = False
    calibratable: bool = False
    peer: bool = False
    supervised: bool = False
    image_size: int | None = None
    uses_others: bool = False

    @abstractmethod
    def fit(self, generated, reference=None) -> "Detector":
        """Learn what is needed from the generated (and, where used, reference) images; returns self."""

    def fit_like(self, fitted: "Detector", generated, reference=None) -> "Detector":
        """Fit on another generated set, keeping what ``fitted`` (the same detector, fitted on the labelled
        images' generated set) learnt that should not change with it (a learnt embedding, a classifier), so
        a threshold fitted on one set's scores still means the same on the other's. Default: fit afresh."""
        return self.fit(generated, reference)

    @abstractmethod
    def _score(self, real) -> tuple[np.ndarray, np.ndarray | None]:
        """``(N,)`` scores (higher = more likely used) and ``(N,)`` nearest generated indices or None."""

    def score_samples(self, real) -> np.ndarray:
        """``(N,)`` float scores of the real images, higher = more likely used for training."""
        return self._score(as_pixels(real))[0]

    def score_with_evidence(self, real, others=None) -> tuple[np.ndarray, np.ndarray | None]:
        """Scores and, where the detector has one, the index of each image's nearest generated image.

        ``others``: real images not scored here, which a detector that ``uses_others`` compares with."""
        if self.uses_others and others is not None and len(as_pixels(others)):
            scores, nearest = self._score(as_pixels(real), others=as_pixels(others))
        else:
            scores, nearest = self._score(as_pixels(real))
        return np.asarray(scores, np.float64), nearest

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def pixel_hashes(pixels) -> list[str]:
    """One SHA-1 per image of its pixels: equal hashes = the same image at this size."""
    return [hashlib.sha1(np.ascontiguousarray(pixels[i]).tobytes()).hexdigest() for i in range(len(pixels))]


def unique_images(pixels, hashes: list[str] | None = None) -> np.ndarray:
    """Indices of the first occurrence of each distinct image (by pixel hash), in order; ``hashes`` are
    ``pixel_hashes(pixels)`` where the caller has them already."""
    seen: dict[str, int] = {}
    for i, h in enumerate(pixel_hashes(pixels) if hashes is None else hashes):
        seen.setdefault(h, i)
    return np.asarray(sorted(seen.values()), np.int64)
