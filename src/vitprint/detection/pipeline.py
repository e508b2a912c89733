"""The detection job: read the sets, train or load the autoencoder, score, decide, write.

Outputs in ``out``: ``scores.csv`` (every real image, every score, the label
where known), ``evaluation.json`` (cross-validated development metrics with
bootstrap intervals, the member-vs-member control, thresholds, combiner
weights), ``run.txt`` (the challenge run file, when there are unknown images)
and ``report.html``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vitprint.config import DataConfig, ModelConfig, OptimConfig, RunConfig
from vitprint.data.imageset import ImageSet
from vitprint.data.sources import read_folders
from vitprint.detection.inputs import Inputs
from vitprint.detection.runfile import run_id, write_run
from vitprint.membership.decisions import DECISIONS, fit_decision
from vitprint.membership.registry import detector_class
from vitprint.membership.scoring import ScoreConfig, compute_scores, score_names
from vitprint.errors import VitprintError
from vitprint.evaluation.truth import evaluate_scores
from vitprint.device import pick_device
from vitprint.inference import load_autoencoder
from vitprint.training.autoencoder import train_autoencoder
from vitprint.training.engine import checkpoint_paths

log = logging.getLogger(__name__)

GROUPS = ("member", "non_member", "unknown")


@dataclass
class DetectConfig:
    out: str = "runs/detect"
    scores: ScoreConfig = field(default_factory=ScoreConfig)
    folds: int = 5
    target_fpr: float | None = None
    decision: str = "auto"
    run_names: bool = False
    n_boot: int = 1000
    seed: int = 0
    device: str = "auto"
    autoencoder: str | None = None
    encoder: str | None = None
    ae_epochs: int = 10
    ae_batch_size: int = 32
    ae_lr: float = 1e-4
    precision: str = "fp32"
    report: bool = True

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise VitprintError(f"folds must be >= 2, got {self.folds}")
        if self.target_fpr is not None and not 0 <= self.target_fpr < 1:
            raise VitprintError(f"target FPR must be in [0, 1), got {self.target_fpr}")
        if self.n_boot < 0:
            raise VitprintError(f"n_boot must be >= 0, got {self.n_boot}")


@dataclass
class RealSet:
    """All real images of the job in one set, with their group and label (-1 = unknown)."""

    images: ImageSet
    groups: np.ndarray
    labels: np.ndarray


def read_reals(inputs: Inputs, size: int, data: DataConfig) -> RealSet:
    parts, groups, labels = [], [], []
    for group, folders, label in (("member", inputs.members, 1), ("non_member", inputs.non_members, 0),
                                  ("unknown", inputs.unknown, -1)):
        if folders:
            s = read_folders(folders, size, data, what=f"{group.replace('_', '-')} images")
            parts.append(s)
            groups += [group] * len(s)
            labels += [label] * len(s)
    ids = [i for p in parts for i in p.ids]
    paths = [q for p in parts for q in p.paths]
    pixels = np.concatenate([np.asarray(p.pixels) for p in parts])
    return RealSet(ImageSet(ids, paths, pixels), np.asarray(groups), np.asarray(labels))


def _autoencoder(inputs_generated: ImageSet, model_cfg: ModelConfig, cfg: DetectConfig, data: DataConfig, device):
    if cfg.autoencoder:
        return load_autoencoder(cfg.autoencoder, device), cfg.autoencoder
    ae_dir = Path(cfg.out) / "autoencoder"
    last, best = checkpoint_paths(ae_dir)
    stamp = ae_dir / "generated.sha1"
    digest = hashlib.sha1(np.ascontiguousarray(inputs_generated.pixels)).hexdigest()
    if stamp.is_file() and stamp.read_text().strip() != digest:
        raise VitprintError(f"{ae_dir} holds an autoencoder trained on other generated images; "
                            "choose another --out (or pass --autoencoder to reuse it on purpose)")
    if not best.is_file() or not (ae_dir / "summary.json").is_file():
        log.info("training the %s autoencoder on %d generated images", model_cfg.vit, len(inputs_generated))
        ae_dir.mkdir(parents=True, exist_ok=True)
        stamp.write_text(digest + "\n")
        run = RunConfig(out=str(ae_dir), epochs=cfg.ae_epochs, batch_size=cfg.ae_batch_size, seed=cfg.seed,
                        resume=last.is_file(), device=cfg.device, precision=cfg.precision)
        train_autoencoder(inputs_generated, model_cfg, run, OptimConfig(lr=cfg.ae_lr), data, encoder_path=cfg.encoder)
    else:
        log.info("reusing the autoencoder in %s (trained on these generated images)", ae_dir)
    return load_autoencoder(best, device), str(best)


def _write_scores(path: Path, reals: RealSet, values: dict[str, np.ndarray], names: bool) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "group", "label", "path", *values])
        for i in range(len(reals.images)):
            label = "" if reals.labels[i] < 0 else int(reals.labels[i])
            w.writerow([run_id(reals.images.ids[i], names), reals.groups[i], label, str(reals.images.paths[i]),
                        *(f"{values[n][i]:.6g}" for n in values)])


def detect(inputs: Inputs, model_cfg: ModelConfig, cfg: DetectConfig, data: DataConfig = DataConfig()) -> dict[str, Any]:
    """Run the whole job; returns the evaluation summary (also written as JSON)."""
    allowed = [*DECISIONS, *score_names(cfg.scores.detectors, bool(inputs.reference))]
    if cfg.decision not in allowed:
        raise VitprintError(f"--decision must be one of {', '.join(allowed)}, got {cfg.decision!r}")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.device)
    size = model_cfg.image_size
    if cfg.autoencoder:
        from vitprint.training.checkpoint import read_meta

        size = read_meta(cfg.autoencoder).get("model", {}).get("image_size", size)
    generated = read_folders(inputs.generated, size, data, what="generated images")
    reals = read_reals(inputs, size, data)
    reference = read_folders(inputs.reference, size, data, what="reference images") if inputs.reference else None
    log.info("%d generated images; %d real (%s)", len(generated), len(reals.images),
             ", ".join(f"{(reals.groups == g).sum()} {g.replace('_', '-')}" for g in GROUPS if (reals.groups == g).any()))

    needs_model = any(detector_class(d).needs_autoencoder for d in cfg.scores.detectors)
    model, model_path = _autoencoder(generated, model_cfg, cfg, data, device) if needs_model else (None, None)

    def at_size(px: int):
        return (read_reals(inputs, px, data).images, read_folders(inputs.generated, px, data, what="generated images"),
                read_folders(inputs.reference, px, data, what="reference images") if inputs.reference else None)

    options = cfg.scores.options(autoencoder=model, device=str(device), seed=cfg.seed)
    scores = compute_scores(reals.images, generated, cfg.scores.detectors, options, reference, at_size)
    values = scores.values
    _write_scores(out / "scores.csv", reals, values, cfg.run_names)

    summary: dict[str, Any] = {"generated": len(generated), "autoencoder": model_path,
                               "detectors": list(values), "peers": scores.peers, "decision": cfg.decision}
    if scores.cross_fitted:
        summary["cross_fitted"] = scores.cross_fitted
    labelled = reals.labels >= 0
    unknown = reals.groups == "unknown"
    evaluation = None
    if labelled.any():
        y = reals.labels[labelled]
        feats = {n: v[labelled] for n, v in values.items()}
        evaluation = evaluate_scores(feats, y, cfg.folds, cfg.n_boot, cfg.seed, cfg.target_fpr)
        summary["development"] = evaluation["results"]
        summary["auto_choices"] = evaluation["auto_choices"]
    if unknown.any():
        path, summary["run_decision"], rule = _decide_unknown(values, reals, labelled, unknown, cfg, out)
        summary["run_file"] = str(path)
        if rule is not None:
            summary["decision_rule"] = rule
    (out / "evaluation.json").write_text(json.dumps(summary, indent=2, default=float))
    if cfg.report:
        from vitprint.evaluation.report import write_report

        summary["report"] = str(write_report(out, reals, generated, scores, evaluation, model, cfg,
                                             summary.get("run_decision")))
    return summary


def _decide_unknown(values, reals: RealSet, labelled, unknown, cfg: DetectConfig, out: Path):
    """Decide the unknown images and write the run file; returns its path, a sentence on how, the fitted rule."""
    names = list(values)
    y = reals.labels[labelled]
    rule = None
    if labelled.any() and len(np.unique(y)) == 2:
        fitted = fit_decision({n: v[labelled] for n, v in values.items()}, y, cfg.decision, cfg.target_fpr, cfg.seed)
        decisions = fitted.predict({n: v[unknown] for n, v in values.items()})
        rule = fitted.to_dict()
        what = "the combiner" if fitted.combiner is not None else fitted.primary
        how = f"{what}, threshold {fitted.threshold:.4g} fitted on {labelled.sum()} development images"
    else:
        name = cfg.decision if cfg.decision in values else names[0]
        if cfg.decision in DECISIONS:
            log.warning("no labelled development images: %s cannot be fitted; deciding by %s", cfg.decision, name)
        test_s = values[name][unknown]
        t = balanced_threshold(test_s)
        decisions = (test_s > t).astype(int)
        how = f"balanced split of {name} at its median {t:.4g} (no labels)"
    ids = [reals.images.paths[i] for i in np.flatnonzero(unknown)]
    path = write_run(out / "run.txt", ids, decisions, names=cfg.run_names)
    sentence = f"{decisions.sum()} of {len(decisions)} unknown images called used ({how})"
    log.info("run file: %s: %s", path, sentence)
    return path, sentence, rule


def balanced_threshold(scores) -> float:
    """The median: half the images are called "used" (for data with no labels)."""
    return float(np.median(np.asarray(scores, float)))
