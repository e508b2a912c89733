"""The attribution job: which subset's generator made each generated image (ImageCLEFmedical GANs Subtask 2).

Reads the real subsets, the labelled generated images (development, optional)
and the pool to attribute; describes every image (anatomy and texture);
measures each method where labels exist (the classifier cross-validated on the
development images); attributes the pool with the chosen method; flags images
that come from none of the subsets. Outputs in ``out``, replaced as one set:
``attribution.csv`` (id, path, predicted subset or ``none``, the subset the run
file names, its probability, the best correlation with a real image, a
probability per subset), ``run.txt`` (``<id>,<subset>`` per pool image),
``evaluation.json`` (every method's metrics with intervals, the choice and the
none-of-these calibration) and ``report.html``.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedKFold

from vitprint import __version__
from vitprint.attribution.features import Described, FeatureSpace
from vitprint.attribution.layout import AttributionInputs
from vitprint.api.job import check_overwrite
from vitprint.attribution.methods import (
    METHODS,
    ClusterMatch,
    EmbeddingClassifier,
    NearestSubset,
    NoneOfThese,
    best_correlation,
    registered_correlation,
    typicality,
)
from vitprint.config import DataConfig
from vitprint.data.imageset import ImageSet, atomic_write
from vitprint.data.outputs import finish_swap, replaced_outputs
from vitprint.data.runlock import run_lock
from vitprint.data.sources import read_files, read_folders
from vitprint.data.folders import list_images
from vitprint.errors import VitprintError
from vitprint.evaluation.attribution_report import write_attribution_report
from vitprint.evaluation.metrics import attribution_metrics
from vitprint.evaluation.runfile import parse_attribution_run, write_attribution_run
from vitprint.membership.base import pixel_hashes

log = logging.getLogger(__name__)

OUTPUTS = ("attribution.csv", "run.txt", "evaluation.json", "report.html")
NONE = "none"


@dataclass
class AttributeConfig:
    out: str = "runs/attribute"
    method: str = "auto"
    image_size: int = 128
    k: int = 5
    none_rate: float = 0.01
    folds: int = 5
    n_boot: int = 1000
    seed: int = 0
    truth: str | None = None
    run_names: bool = False
    report: bool = True
    force: bool = False
    command_line: str = ""

    def __post_init__(self) -> None:
        if self.method not in ("auto", *METHODS):
            raise VitprintError(f"method must be auto or one of {', '.join(METHODS)}, got {self.method!r}", "method")
        if not isinstance(self.image_size, int) or self.image_size < 32:
            raise VitprintError(f"the attribution image size must be a whole number >= 32, got {self.image_size}",
                                "image_size")
        if self.folds < 2:
            raise VitprintError(f"folds must be >= 2, got {self.folds}", "folds")
        if self.n_boot < 0:
            raise VitprintError(f"bootstrap resamples must be >= 0, got {self.n_boot}", "bootstrap")
        if self.k < 1:
            raise VitprintError(f"k must be >= 1, got {self.k}", "k")
        if not 0 < self.none_rate < 1:
            raise VitprintError(f"the none-of-these rate must be in (0, 1), got {self.none_rate}", "none_rate")


def read_labelled(folders: dict[str, Path], subsets: list[str], size: int, data: DataConfig, what: str) -> ImageSet:
    """Every subset's images as one set, ``labels`` the subset's index in ``subsets``."""
    files, labels = [], []
    for k, name in enumerate(subsets):
        if name in folders:
            found = list_images(folders[name])
            files += found
            labels += [k] * len(found)
    images = read_files(files, size, data, labels=labels, what=what)
    missing = sorted(set(range(len(subsets))) - set(np.asarray(images.labels).tolist()))
    if missing and what == "real images":
        raise VitprintError(f"no readable real image in subset {subsets[missing[0]]!r}")
    return images


def _pool_truth(pool: ImageSet, truth: str, subsets: list[str]) -> np.ndarray:
    ids, names = parse_attribution_run(truth, subsets)
    by_id = {Path(i).stem: subsets.index(n) for i, n in zip(ids, names)}
    missing = [i for i in pool.ids if Path(i).stem not in by_id]
    if missing:
        raise VitprintError(f"the truth file {truth} has no subset for {len(missing)} pool image(s), e.g. {missing[0]}")
    return np.asarray([by_id[Path(i).stem] for i in pool.ids])


def _check_roles(real: ImageSet, dev: ImageSet | None, pool: ImageSet | None) -> dict[str, int]:
    """No file in two roles; no pool image that is also a labelled development image (it would be
    attributed by its label, not by the method). Repeats inside the pool are counted."""
    sets = {"real": real, "labelled generated": dev, "pool": pool}
    seen: dict[str, tuple[str, Path]] = {}
    for role, s in sets.items():
        for p in (s.paths if s is not None else ()):
            key = str(Path(p).resolve())
            if key in seen and seen[key][0] != role:
                raise VitprintError(f"an image is both {seen[key][0]} and {role}: {p}")
            seen.setdefault(key, (role, p))
    if dev is not None and pool is not None:
        dev_hash = dict(zip(pixel_hashes(dev.pixels), dev.paths))
        for h, p in zip(pixel_hashes(pool.pixels), pool.paths):
            if h in dev_hash:
                raise VitprintError(f"an image is both labelled generated and in the pool (identical pixels): "
                                    f"{dev_hash[h]} and {p}")
    repeats = 0 if pool is None else len(pool) - len(set(pixel_hashes(pool.pixels)))
    if repeats:
        log.warning("the pool holds %d repeated image(s) (identical pixels); each is attributed like its twin", repeats)
    return {"pool_repeats": repeats}


def _cross_validated(features: np.ndarray, labels: np.ndarray, n_subsets: int, folds: int, seed: int) -> np.ndarray:
    """Out-of-fold probabilities of the classifier on the labelled generated images."""
    folds = min(folds, int(np.bincount(labels, minlength=n_subsets).min()))
    if folds < 2:
        raise VitprintError("cross-validating the classifier needs at least 2 labelled generated images per subset")
    proba = np.zeros((len(labels), n_subsets))
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(features, labels):
        model = EmbeddingClassifier(seed=seed).fit(features[train], labels[train], n_subsets)
        proba[test] = model.predict_proba(features[test])
    return proba


def method_probabilities(real: Described, y_real, dev: Described | None, y_dev, pool: Described | None,
                         n_subsets: int, cfg: AttributeConfig) -> dict[str, dict]:
    """Per method: ``dev`` (probabilities on the labelled generated images: the classifier's out of fold)
    and ``pool`` (probabilities on the pool), each None where the method cannot run."""
    nearest = NearestSubset(cfg.k).fit(real, y_real, n_subsets)
    out: dict[str, dict] = {m: {"dev": None, "pool": None} for m in METHODS}
    out["nearest"] = {"dev": None if dev is None else nearest.predict_proba(dev),
                      "pool": None if pool is None else nearest.predict_proba(pool)}
    if dev is not None:
        out["classifier"]["dev"] = _cross_validated(dev.features, y_dev, n_subsets, cfg.folds, cfg.seed)
        if pool is not None:
            clf = EmbeddingClassifier(seed=cfg.seed).fit(dev.features, y_dev, n_subsets)
            out["classifier"]["pool"] = clf.predict_proba(pool.features)
    for part, d in (("dev", dev), ("pool", pool)):
        if d is not None and len(d) >= 2 * n_subsets:  # unsupervised: each set clustered on its own
            out["cluster"][part] = ClusterMatch(seed=cfg.seed).fit(d.features, out["nearest"][part]).predict_proba(d.features)
    return out


def _choose(cfg: AttributeConfig, results: dict[str, dict], probas: dict[str, dict]) -> tuple[str, str]:
    """The method that writes the run file, and why."""
    if cfg.method != "auto":
        if probas[cfg.method]["pool"] is None:
            need = {"classifier": "labelled generated images", "cluster": "a pool of at least 2 images per subset"}
            raise VitprintError(f"the {cfg.method} method needs {need.get(cfg.method, 'a pool')}", "method")
        return cfg.method, "asked for"
    has_pool = probas["nearest"]["pool"] is not None
    scored = {m: r["dev"]["metrics"]["accuracy"] for m, r in results.items()
              if r.get("dev") and (probas[m]["pool"] is not None or not has_pool)}
    if not scored:
        return "nearest", "no labelled generated images to compare the methods on: the nearest real subset"
    best = max(METHODS, key=lambda m: scored.get(m, -1.0))
    return best, f"the best accuracy on the labelled generated images ({scored[best]:.3f})"


def attribute(inputs: AttributionInputs, cfg: AttributeConfig, data: DataConfig = DataConfig()) -> dict[str, Any]:
    """Run the attribution job; returns its summary (also written to ``out/evaluation.json``)."""
    out = Path(cfg.out)
    subsets = inputs.subsets
    n_subsets = len(subsets)
    real = read_labelled(inputs.real, subsets, cfg.image_size, data, "real images")
    dev = read_labelled(inputs.dev, subsets, cfg.image_size, data, "labelled generated images") if inputs.dev else None
    pool, y_pool = None, None
    if inputs.pool is not None:
        if inputs.pool_subsets:
            if cfg.truth:
                raise VitprintError("the pool is labelled by its sub-folders already; drop the truth file", "truth")
            pool = read_labelled(inputs.pool_subsets, subsets, cfg.image_size, data, "pool images")
            y_pool = np.asarray(pool.labels)
        else:
            pool = read_folders([inputs.pool], cfg.image_size, data, what="pool images")
            y_pool = _pool_truth(pool, cfg.truth, subsets) if cfg.truth else None
    elif cfg.truth:
        raise VitprintError("a truth file labels the pool, and there is no pool", "truth")
    roles = _check_roles(real, dev, pool)
    unread = []
    if pool is not None:
        read = {Path(q).resolve() for q in pool.paths}
        unread = [str(f) for f in list_images(inputs.pool) if f.resolve() not in read]
        if unread:
            log.warning("%d pool image(s) could not be read and get no line in the run file: %s (--strict refuses "
                        "instead)", len(unread), ", ".join(Path(f).name for f in unread[:5]))
    stamp = _stamp(inputs, cfg, data)
    finish_swap(out)  # a swap a crash interrupted is completed before the old outputs are read
    check_overwrite(out, stamp, cfg.force)
    log.info("attributing %s generated images to %d subsets (%s) from %d real images%s",
             len(pool) if pool is not None else "no", n_subsets, ", ".join(subsets), len(real),
             f"; {len(dev)} labelled generated images" if dev is not None else "")
    space = FeatureSpace().fit(real.pixels)
    f_real = space.describe(real.pixels)
    y_real = np.asarray(real.labels)
    f_dev = None if dev is None else space.describe(dev.pixels)
    y_dev = None if dev is None else np.asarray(dev.labels)
    f_pool = None if pool is None else space.describe(pool.pixels)
    probas = method_probabilities(f_real, y_real, f_dev, y_dev, f_pool, n_subsets, cfg)
    results: dict[str, dict] = {}
    for m, parts in probas.items():
        for part, truth in (("dev", y_dev), ("pool", y_pool)):
            if parts[part] is not None and truth is not None:
                results.setdefault(m, {})[part] = attribution_metrics(truth, parts[part].argmax(1), n_subsets,
                                                                      cfg.n_boot, cfg.seed)
    method, why = _choose(cfg, results, probas)
    if dev is not None:
        known, pool_value = typicality(f_dev.features, None if pool is None else f_pool.features)
        measure, source = "typicality", "the labelled generated images (leave-one-out)"
    else:
        known, pool_value = best_correlation(f_real, f_real, exclude_self=True), None
        measure = "best correlation with a real image"
        source = "the real images' correlation with each other (no labelled generated images: a weaker calibration)"
    none = NoneOfThese(cfg.none_rate).fit(known, source)
    summary: dict[str, Any] = {
        "vitprint": __version__, "command": cfg.command_line, "config_stamp": stamp, "subsets": subsets,
        "counts": {"real": np.bincount(y_real, minlength=n_subsets).tolist(),
                   "labelled_generated": None if dev is None else np.bincount(y_dev, minlength=n_subsets).tolist(),
                   "pool": 0 if pool is None else len(pool), "pool_unread": unread, **roles},
        "method": method, "why": why, "results": results,
        "none_of_these": {"rate": cfg.none_rate, "measure": measure, "threshold": none.threshold_,
                          "calibrated_on": source}}
    rows = []
    if pool is not None:
        proba = probas[method]["pool"]
        corr, nearest = registered_correlation(f_pool.fine, f_real.fine)
        best = corr[:, 0]
        flagged = none.predict(best if pool_value is None else pool_value)
        pick = proba.argmax(1)
        summary["none_of_these"]["pool_flagged"] = int(flagged.sum())
        rows = [{"id": pool.ids[i], "path": str(pool.paths[i]), "predicted": NONE if flagged[i] else subsets[pick[i]],
                 "run_subset": subsets[pick[i]], "probability": float(proba[i, pick[i]]),
                 "best_correlation": float(best[i]), "truth": "" if y_pool is None else subsets[y_pool[i]],
                 **{f"p_{s}": float(proba[i, k]) for k, s in enumerate(subsets)}} for i in range(len(pool))]
    examples = _examples(pool, real, best, nearest[:, 0], probas[method]["pool"], subsets) if cfg.report and pool else None
    with run_lock(out), replaced_outputs(out, OUTPUTS) as stage:
        if pool is not None:
            with open(stage / "attribution.csv", "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows)
            write_attribution_run(stage / "run.txt", [r["path"] for r in rows], [r["run_subset"] for r in rows],
                                  names=cfg.run_names)
        atomic_write(stage / "evaluation.json",
                     lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=2, default=float)))
        if cfg.report:
            write_attribution_report(summary, examples, stage / "report.html")
    for name in OUTPUTS:
        if (out / name).is_file():
            summary[name.split(".")[0]] = str(out / name)
    return summary


def _examples(pool, real, best, near, proba, subsets, k: int = 6) -> dict[str, Any]:
    """The most and least confident pool images beside their best-correlated real image."""
    conf = proba.max(1)
    order = np.argsort(-conf, kind="stable")
    picks = {"most confident": order[:k], "least confident": order[::-1][:k]}

    def caption(i):
        j = near[i]
        return (f"{pool.ids[i]}: {subsets[proba[i].argmax()]} p={conf[i]:.2f}\n"
                f"nearest {subsets[real.labels[j]]}/{real.ids[j]} r={best[i]:.2f}")

    return {name: {"generated": np.asarray(pool.pixels[idx]), "real": np.asarray(real.pixels[near[idx]]),
                   "captions": [caption(i) for i in idx]} for name, idx in picks.items()}


def _stamp(inputs: AttributionInputs, cfg: AttributeConfig, data: DataConfig) -> str:
    settings = {k: v for k, v in dataclasses.asdict(cfg).items()
                if k not in ("out", "report", "force", "n_boot", "command_line")}
    blob = json.dumps({"inputs": dataclasses.asdict(inputs), "settings": settings, "window": data.window},
                      sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]
