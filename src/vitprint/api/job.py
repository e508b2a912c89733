"""The detection job: read the sets, train or load the autoencoder, score, decide, write.

Outputs in ``out``: ``scores.csv`` (every real image, every score, the label
where known), ``decisions.csv`` (every real image's decision), ``evaluation.json``
(the verdict and controls, cross-validated development metrics with bootstrap
intervals and p-values, the fitted threshold or combiner weights), ``run.txt``
(the challenge run file, when there are unknown images) and ``report.html``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vitprint import __version__, distributed
from vitprint.config import DataConfig, ModelConfig, OptimConfig, RunConfig
from vitprint.data.folders import list_images
from vitprint.data.imageset import ImageSet, atomic_write
from vitprint.data.orientation import turn_back_each
from vitprint.data.outputs import finish_swap
from vitprint.data.sources import cache_dir, read_files, read_folders, subset
from vitprint.membership.base import pixel_hashes, unique_images
from vitprint.detection.inputs import Inputs
from vitprint.detection.roles import check_roles
from vitprint.evaluation.report import ReconstructionPanel, select_evidence
from vitprint.evaluation.runfile import run_id, validate_run
from vitprint.membership.decisions import DECISIONS
from vitprint.membership.registry import detector_class
from vitprint.membership.scoring import (ScoreConfig, check_plan, compute_scores, merge_scores, plan_orientation,
                                        score_names)
from vitprint.errors import VitprintError
from vitprint.api.assess import AssessConfig, assess
from vitprint.api.result import DetectionResult, with_regions
from vitprint.device import pick_device
from vitprint.inference import load_autoencoder, reconstruct
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
    encoder_weights: str | None = None
    pretrained_hub: bool = False
    ae_epochs: int = 10
    ae_batch_size: int = 32
    ae_lr: float = 1e-4
    precision: str = "auto"
    report: bool = True
    assume_prevalence: float | None = None
    keep_orientation: bool = False  # score generated sets found turned as stored (default: turned back)
    force: bool = False
    command_line: str | None = None  # how the job was started, for the report's reproduction section

    def __post_init__(self) -> None:
        if self.encoder_weights is not None and not Path(self.encoder_weights).is_file():
            raise VitprintError(f"encoder weights not found: {self.encoder_weights}")
        if self.encoder is not None and not Path(self.encoder).is_file():
            raise VitprintError(f"encoder not found: {self.encoder}")
        if self.folds < 2:
            raise VitprintError(f"folds must be >= 2, got {self.folds}")
        if self.target_fpr is not None and not 0 <= self.target_fpr < 1:
            raise VitprintError(f"target FPR must be in [0, 1), got {self.target_fpr}")
        if self.assume_prevalence is not None and not 0 < self.assume_prevalence < 1:
            raise VitprintError(f"assumed prevalence must be in (0, 1), got {self.assume_prevalence}")
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
    # The images and everything that shapes the trained model: other settings mean another autoencoder.
    settings = json.dumps({"model": dataclasses.asdict(model_cfg), "epochs": cfg.ae_epochs, "lr": cfg.ae_lr,
                           "batch": cfg.ae_batch_size, "seed": cfg.seed, "encoder": cfg.encoder,
                           "weights": cfg.encoder_weights, "hub": cfg.pretrained_hub}, sort_keys=True, default=str)
    digest = hashlib.sha1(np.ascontiguousarray(inputs_generated.pixels).tobytes() + settings.encode()).hexdigest()
    if stamp.is_file() and stamp.read_text().strip() != digest:
        raise VitprintError(f"{ae_dir} holds an autoencoder trained on other generated images or with other "
                            "settings; choose another output folder (or name that autoencoder to reuse it on purpose)",
                            ("out", "autoencoder"))
    if not best.is_file() or not (ae_dir / "summary.json").is_file():
        log.info("training the %s autoencoder on %d generated images", model_cfg.vit, len(inputs_generated))
        if device.type == "cpu" and "base" in model_cfg.vit:
            hours = len(inputs_generated) * cfg.ae_epochs / 2.4 / 3600  # ~2.4 img/s measured for ViT-B on 2 cores
            log.warning("the %s autoencoder on a CPU: about %.1f h for %d images x %d epochs on 2 cores "
                        "(--preset tiny takes minutes; docs/benchmarks.md)", model_cfg.vit, hours,
                        len(inputs_generated), cfg.ae_epochs)
        ae_dir.mkdir(parents=True, exist_ok=True)
        if distributed.is_main():
            atomic_write(stamp, lambda tmp: Path(tmp).write_text(digest + "\n"))
        run = RunConfig(out=str(ae_dir), epochs=cfg.ae_epochs, batch_size=cfg.ae_batch_size, seed=cfg.seed,
                        resume=last.is_file(), device=cfg.device, precision=cfg.precision)
        model = train_autoencoder(inputs_generated, model_cfg, run, OptimConfig(lr=cfg.ae_lr), data,
                                  encoder_path=cfg.encoder, vit_weights=cfg.encoder_weights,
                                  pretrained_hub=cfg.pretrained_hub)
        return model.to(device), str(best)
    log.info("reusing the autoencoder in %s (trained on these generated images)", ae_dir)
    return load_autoencoder(best, device), str(best)


def detect(inputs: Inputs, model_cfg: ModelConfig, cfg: DetectConfig, data: DataConfig = DataConfig()) -> dict[str, Any]:
    """Run the whole job; returns the evaluation summary (also written as JSON)."""
    lonely = [d for d in cfg.scores.detectors if detector_class(d).needs_reference]
    if lonely and not inputs.reference:
        raise VitprintError(f"{', '.join(lonely)} needs a reference set (real images the generator never saw): "
                            "give a reference set", "reference")
    if not inputs.labelled:
        check_plan(cfg.scores.detectors, bool(inputs.reference), False, False)
    allowed = [*DECISIONS, *score_names(cfg.scores.detectors, bool(inputs.reference))]
    if cfg.decision not in allowed:
        raise VitprintError(f"decision must be one of {', '.join(allowed)}, got {cfg.decision!r}", "decision")
    out = Path(cfg.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VitprintError(f"cannot use {out} as the output folder: {exc.strerror or exc}") from None
    if not os.access(out, os.W_OK):
        raise VitprintError(f"cannot write to the output folder {out}")
    stamp = _stamp(inputs, model_cfg, cfg)
    if distributed.is_main():  # with several processes, the main one owns the folder (and stops them all)
        finish_swap(out)  # a job stopped while it replaced its outputs: finish that first
        check_overwrite(out, stamp, cfg.force)
    device = pick_device(cfg.device)
    size = model_cfg.image_size
    if cfg.autoencoder:
        from vitprint.training.checkpoint import read_meta

        size = read_meta(cfg.autoencoder).get("model", {}).get("image_size", size)
    gen_sets, keeps, dropped = _generated_sets(inputs, size, data)
    generated = gen_sets[0] if len(gen_sets) == 1 else _joined(gen_sets)
    set_up = []
    if inputs.test_generated:
        set_up.append(f"Generated sets kept apart: the unknown images are scored against the {len(gen_sets[-1])} "
                      f"test generated images, the labelled ones against the {len(gen_sets[0])} development ones "
                      "(they may come from different generators; --pool-generated compares every image with all). "
                      "Detectors that judge a real image against the others (align_nn's rivals) still compare it "
                      "with every real image of both phases."
                      if len(gen_sets) == 2 else
                      "The development and test generated/ folders hold the same images: one generated set.")
    reals = read_reals(inputs, size, data)
    read = {Path(p).resolve() for p in reals.images.paths}
    undecided = [str(f) for folder in inputs.unknown for f in list_images(folder) if f.resolve() not in read]
    if undecided:
        log.warning("%d unknown image(s) could not be read; the run file answers 0 (no evidence of use) for each: "
                    "%s (--strict refuses instead)", len(undecided), ", ".join(Path(f).name for f in undecided[:5]))
    reference = read_folders(inputs.reference, size, data, what="reference images") if inputs.reference else None
    roles = check_roles(reals.images.paths, reals.groups, reals.images.pixels, generated.paths,
                        reference.paths if reference is not None else None,
                        reference.pixels if reference is not None else None)
    if inputs.reference_from_dev:
        set_up.append("Reference set: the development not-used images (automatic; --no-dev-reference turns it off). "
                      "Each of them is scored against a reference that excludes it.")
    check_plan(cfg.scores.detectors, reference is not None, inputs.labelled, bool(roles["reference_overlap"]))
    orientation, mirror, turned, set_turns = _orientation(gen_sets, reals, cfg)
    read_sets = gen_sets  # as read, for the reproduction digest
    if any(t is not None for t in set_turns):  # scored, and shown as evidence, the way round the real images are
        gen_sets = [_turned_back(g, t) for g, t in zip(gen_sets, set_turns)]
        generated = gen_sets[0] if len(gen_sets) == 1 else _joined(gen_sets)
    if roles["reference_overlap"]:
        log.info("%d real image(s) are also in the reference set: each is scored against a reference that "
                 "excludes it (cross-fitted)", roles["reference_overlap"])
    log.info("%d generated images%s; %d real (%s)", len(generated),
             f" ({len(gen_sets[0])} development, {len(gen_sets[1])} test, kept apart)" if len(gen_sets) == 2 else "",
             len(reals.images),
             ", ".join(f"{(reals.groups == g).sum()} {g.replace('_', '-')}" for g in GROUPS if (reals.groups == g).any()))
    for line in set_up:
        log.info("%s", line)
    for line in turned:
        log.warning("%s", line)
    set_up += turned

    needs_model = any(detector_class(d).needs_autoencoder for d in cfg.scores.detectors)
    model, model_path = _autoencoder(generated, model_cfg, cfg, data, device) if needs_model else (None, None)

    cache = cache_dir(data)
    options = {"ref_lr": cfg.ae_lr,  # a reference autoencoder (recon_cal) learns as the job's own did
               **cfg.scores.options(autoencoder=model, device=str(device), seed=cfg.seed,
                                    cache_dir=str(cache) if cache else None, encoder_path=cfg.encoder)}
    if mirror:
        options["mirror"] = True
    unknown = reals.groups == "unknown"
    # Each real image is scored against its own generated set: one pass, or the labelled images against
    # the development set and the unknown ones against the test set.
    passes = [np.arange(len(unknown))] if len(gen_sets) == 1 else [np.flatnonzero(~unknown), np.flatnonzero(unknown)]
    read_at: dict[int, tuple] = {}

    def other_pass(images, which: int):
        """The real images the pass does not score (the other phase's): rivals for detectors that use them."""
        return subset(images, passes[1 - which]) if len(passes) > 1 else None

    def at_size(which: int):
        def sets(px: int):
            if px not in read_at:
                read_at[px] = (read_reals(inputs, px, data).images,
                               [_turned_back(subset(g, k), t)
                                for g, k, t in zip(_read_generated(inputs, px, data), keeps, set_turns)],
                               read_folders(inputs.reference, px, data, what="reference images")
                               if inputs.reference else None)
            r, gens, ref = read_at[px]
            return subset(r, passes[which]), gens[which], ref, other_pass(r, which)
        return sets

    parts = []
    # Under torchrun / accelerate launch, every process scores (each encodes and searches its share of the
    # generated set) and the main one alone assesses and writes.
    with distributed.sharded(device):
        for which, idx in enumerate(passes):
            if len(passes) > 1:
                log.info("scoring the %s images against the %s generated set", ("labelled", "unknown")[which],
                         ("development", "test")[which])
            part = compute_scores(subset(reals.images, idx), gen_sets[which], cfg.scores.detectors, options,
                                  reference, at_size(which), labels=reals.labels[idx], folds=cfg.folds,
                                  like=parts[0][1].fitted if parts else None,
                                  others=other_pass(reals.images, which))
            parts.append((idx, part, sum(len(g) for g in gen_sets[:which])))
    scores = merge_scores(parts, len(unknown))
    if not distributed.is_main():
        return {"process": distributed.rank(), "detectors": list(scores.values), "written": False}

    summary: dict[str, Any] = {"config_stamp": stamp, "generated": len(generated),
                               "generated_duplicates_dropped": dropped, "autoencoder": model_path,
                               "detectors": list(scores.values), "peers": scores.peers, "decision": cfg.decision,
                               "orientation": orientation}
    if scores.cross_fitted:
        summary["cross_fitted"] = scores.cross_fitted
    if scores.notes:
        summary["notes"] = scores.notes
    if scores.supervised:
        set_up.append(f"{', '.join(scores.supervised)} learnt from the labelled images (each scored out of fold); "
                      "such scores are reported but never tested for the verdict, and decide the run file only when "
                      "named.")
    if set_up:
        summary["set_up"] = set_up
    if len(gen_sets) == 2:
        summary["generated_sets"] = {"development": len(gen_sets[0]), "test": len(gen_sets[1]), "apart": True}
    summary["reproduction"] = _reproduction(inputs, model_cfg, cfg, reals, read_sets, reference, data)
    evaluation, assessment, decided = assess(scores.values, reals.labels, unknown, np.asarray(reals.images.pixels),
                                             AssessConfig(cfg.folds, cfg.n_boot, cfg.seed, cfg.target_fpr, cfg.decision,
                                                          cfg.assume_prevalence),
                                             not_for_verdict=[*scores.cross_fitted, *scores.supervised])
    summary.update(assessment)
    if undecided:
        summary["undecided"] = {"files": undecided, "decision": 0,
                                "why": "unreadable; answered 0 (no evidence of use) so the run file covers every image"}
    paths = [str(p) for p in reals.images.paths]
    result = DetectionResult.assemble(ids=[run_id(p, cfg.run_names) for p in paths], paths=paths, labels=reals.labels,
                                      scores=scores, generated_paths=[str(p) for p in generated.paths],
                                      decided=decided, summary=summary, evaluation=evaluation,
                                      real_pixels=reals.images.pixels, generated_pixels=generated.pixels,
                                      undecided=undecided)
    if unknown.any() or undecided:
        summary["run_file"] = str(out / "run.txt")
        log.info("run file: %s: %s", summary["run_file"], decided.sentence)
    turn_of = np.concatenate([np.full(len(g), None, object) if t is None else t  # per generated image
                              for g, t in zip(gen_sets, set_turns)])
    parts = _report_parts(result, reals, model, data, turn_of) if cfg.report else {}
    # The task validator's own checks on the run file, before it replaces anything (one unknown folder: the
    # challenge's layout, where the validator knows every image the file must answer).
    check = (lambda path: validate_run(path, inputs.unknown[0])) if len(inputs.unknown) == 1 else None
    result.save(out, run_names=cfg.run_names, report=cfg.report, check_run=check, **parts)
    return summary


def _orientation(gen_sets: list[ImageSet], reals: RealSet,
                 cfg: DetectConfig) -> tuple[dict, bool, list[str], list[np.ndarray | None]]:
    """Whether the generated images are turned against the real ones, per generated set (``plan_orientation``);
    the last item is, per set, each image's turn to undo (None: the set is left as it is)."""
    names = ("development", "test") if len(gen_sets) == 2 else ("generated",)
    found, mirror, lines, turns = plan_orientation({n: g.pixels for n, g in zip(names, gen_sets)}, reals.images.pixels,
                                                   cfg.scores.detectors, cfg.scores.extra, cfg.seed,
                                                   cfg.keep_orientation)
    return found, mirror, lines, [turns.get(n) for n in names]


def _turned_back(images: ImageSet, turns: np.ndarray | None) -> ImageSet:
    """``images``, each turned back from its entry of ``turns`` (the same set where ``turns`` is None)."""
    return images if turns is None else dataclasses.replace(images, pixels=turn_back_each(images.pixels, turns))


def _read_generated(inputs: Inputs, size: int, data: DataConfig) -> list[ImageSet]:
    sets = [read_folders(inputs.generated, size, data, what="generated images")]
    if inputs.test_generated:
        sets.append(read_folders(inputs.test_generated, size, data, what="test generated images"))
    return sets


def _generated_sets(inputs: Inputs, size: int, data: DataConfig) -> tuple[list[ImageSet], list[np.ndarray], int]:
    """The generated set(s), each without pixel-identical duplicates: one, or the development and the test
    set apart (merged into one when they hold the same images). Returns the sets, the kept indices of
    each as read, and how many duplicates were dropped."""
    sets = _read_generated(inputs, size, data)
    keeps = [unique_images(g.pixels) for g in sets]
    if len(sets) == 2 and set(pixel_hashes(subset(sets[0], keeps[0]).pixels)) == \
            set(pixel_hashes(subset(sets[1], keeps[1]).pixels)):
        sets, keeps = sets[:1], keeps[:1]  # a test generated/ folder that copies the development one
    dropped = sum(len(g) - len(k) for g, k in zip(sets, keeps))
    if dropped:
        log.warning("%d of the %d generated images are pixel-identical duplicates; each image is counted once",
                    dropped, sum(len(g) for g in sets))
    return [subset(g, k) for g, k in zip(sets, keeps)], keeps, int(dropped)


def _joined(sets: list[ImageSet]) -> ImageSet:
    return ImageSet([i for g in sets for i in g.ids], [p for g in sets for p in g.paths],
                    np.concatenate([np.asarray(g.pixels) for g in sets]))


def _report_parts(result: DetectionResult, reals: RealSet, model, data: DataConfig,
                  turn_of: np.ndarray) -> dict[str, Any]:
    """What the report shows beyond the result: the evidence pairs at 256 px from their files (when each
    is a single-image file; a generated image turned back as it was scored, ``turn_of`` per generated
    image) and, with an autoencoder, some reconstructions."""
    parts: dict[str, Any] = {}
    evidence = select_evidence(result)
    if evidence is not None:
        try:
            real = read_files([Path(result.paths[i]) for i in evidence.real_index], 256, data, what="evidence images")
            gen = read_files([Path(result.generated_paths[j]) for j in evidence.generated_index], 256, data,
                             what="evidence images")
            if len(real) == len(gen) == len(evidence.real_index):
                evidence = dataclasses.replace(evidence, real_pixels=np.asarray(real.pixels),
                                               generated_pixels=turn_back_each(gen.pixels,
                                                                               turn_of[evidence.generated_index]))
        except VitprintError:
            pass  # the pairs at the size they were scored at
        parts["evidence"] = with_regions(evidence)
    if model is not None:
        show = [i for g in GROUPS for i in np.flatnonzero(reals.groups == g)[:4]]
        sub = subset(reals.images, show)
        rec = reconstruct(model, sub, keep=True, progress=False)
        parts["reconstructions"] = ReconstructionPanel(
            np.asarray(sub.pixels), rec.images,
            [f"{reals.groups[i].replace('_', '-')}\nmse {m:.4f}" for i, m in zip(show, rec.mse)])
    return parts


def _reproduction(inputs: Inputs, model_cfg: ModelConfig, cfg: DetectConfig, reals: RealSet,
                  gen_sets: list[ImageSet], reference: ImageSet | None, data: DataConfig) -> dict[str, Any]:
    """What a reader needs to rerun this job and check they got the same inputs."""
    def digest(pixels) -> str:
        return hashlib.sha1(np.ascontiguousarray(pixels).tobytes()).hexdigest()[:16]

    sets = {"generated": (inputs.generated + (inputs.test_generated if len(gen_sets) == 1 else []), gen_sets[0].pixels)}
    if len(gen_sets) == 2:
        sets["test_generated"] = (inputs.test_generated, gen_sets[1].pixels)
    for group, folders in (("member", inputs.members), ("non_member", inputs.non_members), ("unknown", inputs.unknown)):
        if folders:
            sets[group] = (folders, np.asarray(reals.images.pixels)[reals.groups == group])
    if reference is not None:
        sets["reference"] = (inputs.reference, reference.pixels)
    return {"vitprint": __version__, "command": cfg.command_line,
            "inputs": {k: {"folders": [str(f) for f in folders], "images": int(len(px)), "pixels_sha1": digest(px)}
                       for k, (folders, px) in sets.items()},
            "model": {"vit": model_cfg.vit, "image_size": model_cfg.image_size, "latent_dim": model_cfg.latent_dim},
            "detectors": list(cfg.scores.detectors), "detector_options": cfg.scores.extra, "decision": cfg.decision,
            "seed": cfg.seed, "folds": cfg.folds, "bootstrap": cfg.n_boot, "window": data.window}


def _stamp(inputs: Inputs, model_cfg: ModelConfig, cfg: DetectConfig) -> str:
    """A hash of everything that decides the outputs (not where they go or whether a report is drawn)."""
    settings = {k: v for k, v in dataclasses.asdict(cfg).items()
                if k not in ("out", "report", "force", "n_boot", "command_line")}
    blob = json.dumps({"inputs": {k: [str(p) for p in v] if isinstance(v, list) else v
                                  for k, v in dataclasses.asdict(inputs).items()},
                       "model": dataclasses.asdict(model_cfg), "settings": settings}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def check_overwrite(out: Path, stamp: str, force: bool) -> None:
    """A run file made with other settings is never replaced silently."""
    run, ev = out / "run.txt", out / "evaluation.json"
    if not run.is_file() or force:
        return
    try:
        old = json.loads(ev.read_text()).get("config_stamp")
    except (OSError, ValueError):
        old = None
    if old != stamp:
        raise VitprintError(f"{out} holds a run file made with other inputs or settings; choose another "
                            "output folder or force the replacement", ("out", "force"))
