"""vitprint as a library: ``detect`` in memory, ``DetectionResult.save`` to write the usual files.

    import vitprint
    result = vitprint.detect(generated, real, labels=labels)   # uint8 arrays, folders or lists of files
    print(result.verdict["sentence"])
    result.scores["align_nn"], result.decisions, result.p_used
    result.save("runs/audit", report=True)                    # scores.csv, decisions.csv, run.txt, report.html,
                                                              # evaluation.json
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vitprint.config import DataConfig
from vitprint.data.folders import list_images
from vitprint.data.imageset import ImageSet
from vitprint.data.orientation import turn_back_each
from vitprint.data.sources import read_files
from vitprint.api.assess import AssessConfig, assess
from vitprint.api.result import DetectionResult
from vitprint.detection.roles import check_roles
from vitprint.errors import VitprintError
from vitprint.membership.base import pixel_hashes, unique_images
from vitprint.membership.scoring import check_options, check_plan, compute_scores, plan_orientation, resize_pixels

API_DETECTORS = ("pixel_nn", "mc", "align_nn", "copy_nn")
log = logging.getLogger(__name__)
CONTEXT = ("autoencoder", "device", "cache_dir", "batch_size", "precision", "encoder_path")  # shared by any detector that wants them


def _as_images(source, size: int | None, data: DataConfig, what: str,
               unreadable: list[str] | None = None) -> tuple[list[str], list[str], np.ndarray]:
    """ids, paths and uint8 ``(N, S, S)`` pixels from an array, a folder, or a list of files/folders.
    Files that could not be read (skipped, unless ``data.strict``) are appended to ``unreadable``."""
    if isinstance(source, np.ndarray):
        images = ImageSet.from_pixels(source, what)
        return images.ids, [str(p) for p in images.paths], images.pixels
    items = [source] if isinstance(source, (str, Path)) else list(source)
    files = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            files += list_images(p)
        elif p.is_file():
            files.append(p)
        else:
            raise VitprintError(f"{what}: not a file or folder: {p}")
    images = read_files(files, size or 256, data, what=what)
    if unreadable is not None:
        read = {Path(p).resolve() for p in images.paths}
        unreadable += [str(f) for f in files if Path(f).resolve() not in read]
    return [Path(i).stem for i in images.ids], [str(p) for p in images.paths], np.asarray(images.pixels)


def detect(generated, real, *, labels: Sequence[int] | None = None, reference=None,
           detectors: Sequence[str] = API_DETECTORS, options: dict[str, Any] | None = None,
           image_size: int | None = None, decision: str = "auto", folds: int = 5, n_boot: int = 1000,
           seed: int = 0, target_fpr: float | None = None, assume_prevalence: float | None = None,
           keep_orientation: bool = False, data: DataConfig = DataConfig()) -> DetectionResult:
    """Which of ``real`` were used to train the generator that made ``generated``?

    ``generated``, ``real`` and ``reference`` are uint8 arrays ``(N, S, S)``,
    folders, or lists of image files/folders (read at ``image_size``, default
    256). ``labels`` (1 used, 0 not used, -1 unknown) makes the result
    cross-validated, with a verdict; unknown images are decided by the rule
    fitted on the labelled ones. ``options`` go to the detectors (for
    ``recon``/``latent_nn`` pass ``options={"autoencoder": model}``).
    Generated images found stored under another turn than the real ones
    (upside down, a quarter turn; ``vitprint.data.orientation``) are turned
    back, each by its own vote, before scoring, unless ``keep_orientation``.
    """
    options = dict(options or {})
    check_options(tuple(detectors), {k: v for k, v in options.items() if k not in CONTEXT})
    _, gen_paths, gen = _as_images(generated, image_size, data, "generated")
    unreadable: list[str] = []
    ids, real_paths, real_px = _as_images(real, image_size, data, "real", unreadable)
    if unreadable and labels is not None:
        raise VitprintError(f"{len(unreadable)} real image(s) could not be read, so the labels cannot be matched to "
                            f"the images: {', '.join(Path(f).name for f in unreadable[:5])}; remove them or fix them")
    ref_paths, ref = (None, None)
    if reference is not None:
        _, ref_paths, ref = _as_images(reference, image_size, data, "reference")
    for what, px in (("generated", gen), ("real", real_px), ("reference", ref)):
        if px is not None and px.shape[-1] != px.shape[-2]:
            raise VitprintError(f"the {what} images must be square, (N, S, S); got {px.shape[-2]} x {px.shape[-1]}")
    size = real_px.shape[-1]
    if gen.shape[-1] != size:
        gen = resize_pixels(gen, size)
    if ref is not None and ref.shape[-1] != size:
        ref = resize_pixels(ref, size)
    y = np.full(len(real_px), -1) if labels is None else np.asarray(labels, int)
    if len(y) != len(real_px):
        raise VitprintError(f"labels must have one entry per real image: {len(y)} labels, {len(real_px)} images")
    if not np.isin(y, (-1, 0, 1)).all():
        raise VitprintError(f"labels must be 1 (used), 0 (not used) or -1 (unknown), got {sorted(set(y) - {-1, 0, 1})}")
    groups = np.where(y == 1, "member", np.where(y == 0, "non_member", "unknown"))
    roles = check_roles(real_paths, groups, real_px, gen_paths, ref_paths, ref)
    labelled = min((y == 1).sum(), (y == 0).sum()) >= 1
    check_plan(tuple(detectors), ref is not None, labelled, bool(roles["reference_overlap"]))
    hashes = pixel_hashes(gen)
    keep = unique_images(gen, hashes)
    orientation, mirror, set_up, turns = plan_orientation({"generated": gen[keep]}, real_px, tuple(detectors), options,
                                                          seed, keep_orientation)
    for line in set_up:
        log.warning("%s", line)
    if mirror:
        options["mirror"] = True
    if "generated" in turns:  # scored, and shown as evidence, the way round the real images are
        of_kept = dict(zip((hashes[k] for k in keep), turns["generated"]))
        gen = turn_back_each(gen, [of_kept[h] for h in hashes])  # a dropped duplicate as its kept twin
    scores = compute_scores(real_px, gen[keep], tuple(detectors), {"seed": seed, **options}, ref, labels=y, folds=folds)
    unknown = y < 0
    evaluation, summary, decided = assess(scores.values, y, unknown, real_px,
                                 AssessConfig(folds, n_boot, seed, target_fpr, decision, assume_prevalence),
                                 not_for_verdict=[*scores.cross_fitted, *scores.supervised])
    summary.update(detectors=list(scores.values), peers=scores.peers, generated=int(len(keep)),
                   generated_duplicates_dropped=int(len(gen) - len(keep)), orientation=orientation)
    if set_up:
        summary["set_up"] = set_up
    if scores.cross_fitted:
        summary["cross_fitted"] = scores.cross_fitted
    if unreadable:
        # As the command does: an unknown image that could not be read is answered 0 in the run file, and said so.
        summary["undecided"] = {"files": unreadable, "decision": 0,
                                "why": "unreadable; answered 0 (no evidence of use) so the run file covers every image"}
    nearest = {k: keep[v] for k, v in scores.nearest.items()}  # indices into the generated images as given
    return DetectionResult.assemble(ids=ids, paths=real_paths, labels=y, scores=scores, generated_paths=gen_paths,
                                    decided=decided, summary=summary, evaluation=evaluation, real_pixels=real_px,
                                    generated_pixels=gen, nearest=nearest, undecided=unreadable)
