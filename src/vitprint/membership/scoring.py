"""Every requested detector on one job's images: scores per real image, plus the evidence."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from vitprint.data.orientation import MIRRORED, PARTNER, check_orientation, image_turns
from vitprint.errors import VitprintError
from vitprint.membership.base import Detector, as_pixels
from vitprint.membership.knn import INDEXES
from vitprint.membership.registry import accepted_options, available_detectors, create_detector, detector_class

log = logging.getLogger(__name__)

DEFAULT_DETECTORS = ("recon", "latent_nn", "pixel_nn", "mc", "align_nn", "copy_nn", "subspace")


WRAPPER_OPTIONS = ("ref_folds",)  # taken by the calibrated / cross-fitted wrappers


def check_options(detectors, options: dict[str, Any]) -> None:
    """Refuse an option none of ``detectors`` takes (a typo would otherwise be ignored silently)."""
    for key in options:
        if key in WRAPPER_OPTIONS:
            continue
        if not any(key in accepted_options(detector_class(d), {key: None}) for d in detectors):
            raise VitprintError(f"detector option {key!r} is taken by none of the detectors chosen "
                                f"({', '.join(detectors)})")


@dataclass
class ScoreConfig:
    """Which detectors run, and the options they share."""

    detectors: tuple[str, ...] = DEFAULT_DETECTORS
    k: int = 5
    latent_metric: str = "cosine"
    pixel_size: int = 64
    batch_size: int = 64
    precision: str = "auto"
    index: str = "auto"  # nearest-neighbour search: auto, exact, flat, ivf or hnsw (knn.INDEXES)
    extra: dict[str, Any] = field(default_factory=dict)  # detector-specific options (align_size=128, ...)

    def __post_init__(self) -> None:
        self.detectors = tuple(self.detectors)
        known = available_detectors()
        bad = [d for d in self.detectors if d not in known]
        if bad or not self.detectors:
            raise VitprintError(f"detectors must be among {', '.join(known)}, got {', '.join(bad) or 'none'}")
        if self.k < 1:
            raise VitprintError(f"k must be >= 1, got {self.k}")
        if self.pixel_size < 4:
            raise VitprintError(f"pixel_size must be >= 4, got {self.pixel_size}")
        if self.index not in INDEXES:
            raise VitprintError(f"index must be one of {', '.join(INDEXES)}, got {self.index!r}", "index")
        check_options(self.detectors, self.extra)

    def options(self, **context) -> dict[str, Any]:
        """The options handed to every detector, plus the job's context (autoencoder, device, seed)."""
        return {"k": self.k, "latent_metric": self.latent_metric, "pixel_size": self.pixel_size,
                "batch_size": self.batch_size, "precision": self.precision, "index": self.index, **self.extra,
                **context}


@dataclass
class Scores:
    """Scores of the real images, plus the nearest generated image for the evidence."""

    values: dict[str, np.ndarray] = field(default_factory=dict)
    nearest: dict[str, np.ndarray] = field(default_factory=dict)  # detector -> (N,) generated index
    peers: list[str] = field(default_factory=list)
    cross_fitted: dict[str, int] = field(default_factory=dict)  # detector -> real images cross-fitted
    notes: list[str] = field(default_factory=list)  # settings that had to be reduced, said once
    supervised: list[str] = field(default_factory=list)  # scores learnt from the labels (out of fold)
    fitted: dict[str, Any] = field(default_factory=dict)  # detector -> fitted, for a pass over another set
    seconds: dict[str, float] = field(default_factory=dict)  # detector -> wall time of its fit and scoring


def score_names(detectors, with_reference: bool) -> list[str]:
    """The score columns ``compute_scores`` produces, in order: each detector, then its ``_cal`` variant."""
    names = []
    for d in detectors:
        cls = detector_class(d)
        if cls.needs_reference and not with_reference:
            continue
        names.append(d)
        if with_reference and cls.calibratable:
            names.append(f"{d}_cal")
    return names


def resize_pixels(pixels, size: int) -> np.ndarray:
    """uint8 ``(N, S, S)`` -> uint8 ``(N, size, size)`` (area down, bilinear up)."""
    pixels = as_pixels(pixels)
    if pixels.shape[-1] == size:
        return np.asarray(pixels)
    x = torch.from_numpy(np.asarray(pixels, np.float32))[:, None]
    mode = "area" if size < pixels.shape[-1] else "bilinear"
    y = F.interpolate(x, size=(size, size), mode=mode, **({} if mode == "area" else {"align_corners": False}))
    return y[:, 0].round().clamp(0, 255).to(torch.uint8).numpy()


def compute_scores(
    real,
    generated,
    detectors=DEFAULT_DETECTORS,
    options: dict[str, Any] | None = None,
    reference=None,
    at_size: Callable[[int], tuple[Any, Any, Any, Any]] | None = None,
    labels=None,
    folds: int = 5,
    like: dict[str, Any] | None = None,
    others=None,
) -> Scores:
    """Fit every detector on the generated (and reference) images and score the reals.

    ``options`` is the shared context (autoencoder, k, device, batch size, seed,
    ...); each detector takes what its constructor accepts. A detector that asks
    for its own image size gets the sets from ``at_size(size)`` (real, generated,
    reference, others; default: resized from the given arrays). ``others``: the
    job's real images that this call does not score (the other phase's), for
    the detectors that judge each real image against the others too
    (``Detector.uses_others``: align_nn's rivals). Detectors that need a reference set are
    skipped (with a warning) when there is none. A supervised detector reads
    ``labels`` (1/0, -1 = unknown; labelled images are scored out of ``folds``
    folds), or scores with the classifier another pass learnt; with neither it
    is skipped. ``like``: the detectors another pass fitted (``Scores.fitted``)
    on the labelled images' generated set; each detector here keeps what that
    one learnt (``Detector.fit_like``), so thresholds mean the same on both sets.
    """
    options = dict(options or {})
    out = Scores()
    real_px, gen_px = as_pixels(real), as_pixels(generated)
    ref_px = as_pixels(reference) if reference is not None else None
    others_px = as_pixels(others) if others is not None and len(as_pixels(others)) else None
    resized: dict[int, tuple[Any, Any, Any, Any]] = {}
    for key in ("k", "copy_k", "mc_k"):
        if key in options and options[key] > len(gen_px):
            note = f"{key}={options[key]} is more than the {len(gen_px)} generated images; {len(gen_px)} are used"
            log.warning(note)
            out.notes.append(note)

    def sets_for(size: int | None):
        if size is None or size == real_px.shape[-1]:
            return real_px, gen_px, ref_px, others_px
        if size not in resized:
            resized[size] = at_size(size) if at_size else tuple(
                None if x is None else resize_pixels(x, size) for x in (real_px, gen_px, ref_px, others_px))
        return resized[size]

    y = None if labels is None else np.asarray(labels, int)
    can_learn = y is not None and min((y == 1).sum(), (y == 0).sum()) >= 2
    for name in score_names(detectors, ref_px is not None):
        det = create_detector(name, **options)
        prior = (like or {}).get(name)
        if det.supervised and not can_learn and prior is None:
            note = f"{name} learns from labelled images (at least 2 used and 2 not used); none here, skipped"
            log.warning(note)
            out.notes.append(note)
            continue
        if det.needs_autoencoder and options.get("autoencoder") is None:
            raise VitprintError(f"{name} needs a trained autoencoder")
        r, g, ref, other = sets_for(det.image_size)
        log.info("scoring with %s", name)
        started = time.perf_counter()
        if prior is not None:
            det.fit_like(prior, g, ref if det.needs_reference else None)
        else:
            det.fit(g, ref if det.needs_reference else None)
        if det.supervised:
            out.supervised.append(name)
        if det.supervised and prior is None:
            values, nearest = det.score_labelled(r, y, folds, **({"others": other} if det.uses_others else {}))
        else:
            values, nearest = det.score_with_evidence(r, other)
        if type(det).fit_like is not Detector.fit_like:  # only what another pass can reuse is kept
            out.fitted[name] = det
        out.values[name] = values
        out.seconds[name] = time.perf_counter() - started
        log.info("%s: %.1f s", name, out.seconds[name])
        if nearest is not None:
            out.nearest[name] = np.asarray(nearest)
        if det.peer:
            out.peers.append(name)
        if getattr(det, "cross_fitted", 0):
            out.cross_fitted[name] = det.cross_fitted
    for d in detectors:
        if detector_class(d).needs_reference and ref_px is None:
            log.warning("%s needs a reference set (real images the generator never saw); skipped", d)
    if not out.values:
        if out.notes:
            raise VitprintError(f"none of the detectors ({', '.join(detectors)}) could run: {'; '.join(out.notes)}")
        raise VitprintError(f"none of the detectors ({', '.join(detectors)}) could run: they need a reference set")
    return out


def merge_scores(parts: list[tuple[np.ndarray, Scores, int]], n: int) -> Scores:
    """One job's scores from passes over parts of its real images: ``(real indices, scores, offset)``
    each, where ``offset`` places the pass's generated images in the job's list of generated images."""
    if len(parts) == 1 and len(parts[0][0]) == n:
        return parts[0][1]
    first = parts[0][1]
    out = Scores(peers=list(first.peers), supervised=list(first.supervised))
    for name in first.values:
        v = np.full(n, np.nan)
        for idx, s, _ in parts:
            v[idx] = s.values[name]
        out.values[name] = v
    for name in first.nearest:
        if all(name in s.nearest for _, s, _ in parts):
            near = np.full(n, -1, np.int64)
            for idx, s, offset in parts:
                near[idx] = np.asarray(s.nearest[name]) + offset
            out.nearest[name] = near
    for _, s, _ in parts:
        for name, count in s.cross_fitted.items():
            out.cross_fitted[name] = out.cross_fitted.get(name, 0) + count
        for name, sec in s.seconds.items():
            out.seconds[name] = out.seconds.get(name, 0.0) + sec
        out.notes += [note for note in s.notes if note not in out.notes]
    return out


def _mirror_search(detectors, user_options: dict[str, Any]) -> tuple[bool, str]:
    """Whether a finding turns align_nn's mirror search on (align_nn runs, the user did not set ``mirror``),
    and what to say of it."""
    if "align_nn" not in detectors:
        return False, "only align_nn searches mirrored copies (option mirror=true), and it is not run."
    if "mirror" in user_options:
        return False, (f"align_nn {'searches' if user_options['mirror'] else 'was told not to search'} mirrored "
                       "copies (mirror set by the user).")
    return True, "align_nn searches mirrored copies too (option mirror=false turns this off)."


def plan_orientation(generated_sets: dict[str, Any], real, detectors, user_options: dict[str, Any],
                     seed: int = 0, keep_orientation: bool = False
                     ) -> tuple[dict[str, dict], bool, list[str], dict[str, np.ndarray]]:
    """Whether each generated set is turned against the real images (``vitprint.data.orientation``).

    Returns what was found per set, whether ``align_nn`` is to search mirrored copies (``_mirror_search``:
    some set is found mirrored, or turned back where some of its images voted for the set's turn
    mirrored), one line per finding for the caller to log and show, and per set stored under another turn,
    each image's turn to undo (``image_turns``: None for an image left as it is), which the caller applies
    (``turn_back_each``) before any detector sees the images; none with ``keep_orientation``, where such a
    turn is said, not mended."""
    found, mirror, lines, turns = {}, False, [], {}
    for name, pixels in generated_sets.items():
        check = check_orientation(pixels, real, seed=seed)
        found[name] = check.to_dict()
        which = "the generated images" if name == "generated" else f"the {name} generated images"
        whole = check.set_turns()
        if whole and not keep_orientation:
            turns[name] = image_turns(pixels, real, check)
            found[name]["turned_back"] = {t: int((turns[name] == t).sum()) for t in whole}
        for turn, share in check.turned().items():
            seen = (f"{share:.0%} of {which} match the real images best {turn} (the real images among "
                    f"themselves: {check.baseline[turn]:.0%})")
            if turn == MIRRORED:
                search, said = _mirror_search(detectors, user_options)
                mirror |= search
                line = f"{seen}: a generator trained with random flips, or another orientation convention; {said}"
            elif keep_orientation:
                line = (f"{seen}: stored under another orientation convention? They are scored as stored, as asked "
                        "(keep-orientation), which the detectors' search does not undo.")
            else:
                line = (f"{seen}: stored under another orientation convention? {found[name]['turned_back'][turn]} of "
                        "them are turned back from it before every detector, the others left as they are "
                        "(keep-orientation scores them all as stored).")
            lines.append(line[0].upper() + line[1:])
        partner = PARTNER[whole[0]] if whole else None
        if partner and not keep_orientation and check.shares[partner] > 0:
            search, said = _mirror_search(detectors, user_options)
            mirror |= search
            lines.append(f"{check.shares[partner]:.0%} of {which} match the real images best {partner}, the set's "
                         f"turn mirrored (a generator trained with random flips, or a pick between two nearly alike "
                         f"turns that a copy turned back comes out of mirrored): {said}")
    return found, mirror, lines, turns


def check_plan(detectors, with_reference: bool, labelled: bool, reference_overlaps: bool) -> None:
    """Refuse, before any work, a set of detectors whose scores could not be used: a supervised detector
    without labelled images, or (with labels) only scores the verdict may not read (learnt from the labels,
    or cross-fitted against a reference that holds scored images)."""
    supervised = [d for d in detectors if detector_class(d).supervised]
    if supervised and not labelled:
        raise VitprintError(f"{', '.join(supervised)} learns from labelled images (used and not used); there are "
                            "none here: leave it out", "detectors")
    if not labelled:
        return

    def untestable(name: str) -> bool:
        base = detector_class(name[:-4] if name.endswith("_cal") and name not in available_detectors() else name)
        uses_reference = name.endswith("_cal") or base.needs_reference
        return base.supervised or (reference_overlaps and uses_reference)

    names = score_names(detectors, with_reference)
    if names and all(untestable(n) for n in names):
        raise VitprintError(f"none of the scores ({', '.join(names)}) could be tested for a verdict: each would be "
                            "learnt from the labels or cross-fitted against a reference that holds scored images; add "
                            "a detector that uses neither (align_nn, pixel_nn, copy_nn, ...)", "detectors")
