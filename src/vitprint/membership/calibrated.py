"""Wrappers that use a reference set (real images the generator never saw) without leakage.

- ``Calibrated``: a detector's score against the generated set minus the same
  score against the reference set (GAN-Leaks' calibration): "close to the
  generated images" stops counting when the image is merely typical.
- ``CrossFitted``: any detector that needs a reference set.

Both cross-fit: a real image that is also in the reference set (same pixels)
is scored against a reference from which it and its fold were removed, so no
image ever serves as its own reference (which would score it perfectly for
the wrong reason).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from vitprint.errors import VitprintError
from vitprint.membership.base import Detector, as_pixels, pixel_hashes


class _ReferenceFolds:
    """Fold of each reference image (by pixel hash), and which real images sit in which fold."""

    def __init__(self, reference, folds: int, seed: int):
        self.pixels = as_pixels(reference)
        hashes = pixel_hashes(self.pixels)
        unique = sorted(set(hashes))
        order = np.random.default_rng(seed).permutation(len(unique))
        folds = max(2, min(folds, len(unique)))
        self.fold_of_hash = {unique[j]: int(f % folds) for f, j in enumerate(order)}
        self.fold_of_ref = np.asarray([self.fold_of_hash[h] for h in hashes])
        self.folds = folds

    def real_folds(self, real) -> np.ndarray:
        """``(N,)`` fold of each real image, -1 where it is not in the reference set."""
        return np.asarray([self.fold_of_hash.get(h, -1) for h in pixel_hashes(real)])

    def without(self, fold: int) -> np.ndarray:
        return np.asarray(self.pixels[np.flatnonzero(self.fold_of_ref != fold)])


class _Wrapper(Detector):
    def __init__(self, make: Callable[[], Detector], folds: int = 5, seed: int = 0):
        self.make = make
        probe = make()  # an instance: its options (its image size, say) may differ from the class defaults
        self.inner_cls = type(probe)
        self.folds, self.seed = folds, seed
        self.peer = probe.peer
        self.image_size = probe.image_size
        self.needs_autoencoder = probe.needs_autoencoder
        self.needs_reference = True
        self.cross_fitted = 0  # real images scored against a reference that excludes them

    def _check_reference(self, reference) -> _ReferenceFolds:
        if reference is None or len(as_pixels(reference)) < 2:
            raise VitprintError(f"{self.name} needs a reference set of at least 2 images the generator never saw")
        return _ReferenceFolds(reference, self.folds, self.seed)


class Calibrated(_Wrapper):
    """``score(x) = score_generated(x) - score_reference(x)`` of one base detector."""

    def __init__(self, make: Callable[[], Detector], folds: int = 5, seed: int = 0):
        super().__init__(make, folds, seed)
        self.name = f"{self.inner_cls.name}_cal"

    def fit(self, generated, reference=None) -> "Calibrated":
        self.ref_folds = self._check_reference(reference)
        self.on_generated = self.make().fit(generated)
        self.on_reference = self.make().fit(self.ref_folds.pixels)
        return self

    def _score(self, real):
        s_gen, nearest = self.on_generated._score(real)
        s_ref = np.asarray(self.on_reference.score_samples(real), np.float64).copy()
        where = self.ref_folds.real_folds(real)
        self.cross_fitted = int((where >= 0).sum())
        for fold in np.unique(where[where >= 0]):
            idx = np.flatnonzero(where == fold)
            s_ref[idx] = self.make().fit(self.ref_folds.without(fold)).score_samples(np.asarray(real[idx]))
        return np.asarray(s_gen, np.float64) - s_ref, nearest


class CrossFitted(_Wrapper):
    """A detector that needs a reference set, refitted without each fold a real image sits in."""

    def __init__(self, make: Callable[[], Detector], folds: int = 5, seed: int = 0):
        super().__init__(make, folds, seed)
        self.name = self.inner_cls.name

    def fit(self, generated, reference=None) -> "CrossFitted":
        self.ref_folds = self._check_reference(reference)
        self.generated = generated
        self.full = self.make().fit(generated, self.ref_folds.pixels)
        return self

    def _score(self, real):
        scores, nearest = self.full._score(real)
        scores = np.asarray(scores, np.float64).copy()
        where = self.ref_folds.real_folds(real)
        self.cross_fitted = int((where >= 0).sum())
        for fold in np.unique(where[where >= 0]):
            idx = np.flatnonzero(where == fold)
            part = self.make().fit(self.generated, self.ref_folds.without(fold))
            scores[idx] = part._score(np.asarray(real[idx]))[0]
        return scores, nearest
