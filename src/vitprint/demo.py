"""The demo: the whole membership story on built-in phantom data, resumable step by step.

1. A "public" phantom set in four classes, to pretrain the encoder on (as the
   seed pretrained on a public chest-CT set).
2. A separate pool of phantom patients split into members (``real_used``) and
   non-members (``real_not_used``): the challenge's development layout.
3. A generator trained long on the members only (by default a VAE, 1,000 steps on
   64 members: a setting that memorises), and images generated from it
   (``generated``).
4. The same generator trained on other patients (a setting that cannot leak),
   for the comparison line.
5. Encoder pretraining, then detection: the autoencoder trained on the
   generated images, every score, cross-validated decisions, metrics with
   intervals, the verdict with its controls and the HTML report; and the
   verdict on the images of the generator that never saw the members.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

import numpy as np

from vitprint.config import DataConfig, RunConfig
from vitprint.data.phantoms import CLASSES, make_phantoms, phantom, save_palette_png
from vitprint.data.sources import read_folders
from vitprint.errors import VitprintError
from vitprint.detection.inputs import resolve_inputs
from vitprint.api.job import DetectConfig, detect
from vitprint.membership.detectors.align_nn import COARSE_GRID
from vitprint.membership.scoring import ScoreConfig
from vitprint.models.presets import model_config
from vitprint.progress import bar
from vitprint.training.engine import checkpoint_paths
from vitprint.training.generator import generate, train_generator
from vitprint.training.pretrain import PRETRAIN_OPTIM, pretrain

log = logging.getLogger(__name__)


def write_membership_split(root: str | Path, n_dev: int, n_test: int, size: int = 256, seed: int = 0) -> Path:
    """Distinct phantom patients (mixed classes) in the challenge's layout.

    ``root/dev/real_used`` and ``root/dev/real_not_used`` get ``n_dev`` each;
    ``root/test/real_unknown`` gets ``n_test`` members and ``n_test``
    non-members under neutral names, with the truth in ``root/test_truth.csv``.
    Every member, development and test, is also copied to ``root/members`` for the generator to train on.
    """
    root = Path(root)
    dev, test = root / "dev", root / "test"
    for folder in (dev / "real_used", dev / "real_not_used", test / "real_unknown", root / "members"):
        folder.mkdir(parents=True, exist_ok=True)
    n = n_dev + n_test
    unknown_order = np.random.default_rng([seed, 8]).permutation(2 * n_test)
    truth = []
    for i in bar(range(2 * n), desc="real images", unit="img"):
        # Stream 7 keeps these patients apart from the pretraining phantoms. Each member and the
        # non-member drawn after it share a class, so both groups have the same mix of findings
        # (otherwise the split itself would tell them apart, as the blind baseline showed).
        px = phantom(np.random.default_rng([seed, 7, i]), CLASSES[(i // 2) % len(CLASSES)], size)
        member, k = i % 2 == 0, i // 2
        if k < n_dev:
            target = dev / ("real_used" if member else "real_not_used") / f"{'real_used' if member else 'real_not_used'}_{k:04d}.png"
        else:
            j = int(unknown_order[2 * (k - n_dev) + (0 if member else 1)])
            target = test / "real_unknown" / f"real_unknown_{j:04d}.png"
            truth.append((target.stem, int(member)))
        save_palette_png(px, target)
        if member:  # the generator's training set: every member, development and test
            save_palette_png(px, root / "members" / f"member_{k:04d}.png")
    truth_path = root / "test_truth.csv"
    truth_path.write_text("".join(f"{i},{lab}\n" for i, lab in sorted(truth)))
    return truth_path


NULL_DETECTORS = ("pixel_nn", "mc", "align_nn", "copy_nn", "subspace")  # the comparison's detectors: no autoencoder to train


def _check_settings(out: Path, settings: dict) -> None:
    """A demo folder is resumed only with the settings that made its finished steps."""
    path = out / "demo-settings.json"
    if path.is_file():
        old = json.loads(path.read_text())
        differ = [f"{k} {old.get(k)} (not {v})" for k, v in settings.items() if old.get(k) != v]
        if differ:
            raise VitprintError(f"{out} holds a demo made with other settings: {', '.join(differ)}; choose another "
                                "output folder", "out")
        return
    if (out / "data" / ".reals").is_file():
        raise VitprintError(f"{out} holds a demo made by an earlier version; choose another output folder", "out")
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2))


def _done(marker: Path) -> bool:
    return marker.is_file()


def _generator(images: Path, run_dir: Path, out: Path, family: str, epochs: int, n_generated: int, size: int,
               data: DataConfig, batch_size: int, seed: int) -> None:
    """Train (or finish training) a generator on the images below ``images`` and write its samples to ``out``."""
    last, _ = checkpoint_paths(run_dir)
    if not (run_dir / "samples.png").is_file():
        train_images = read_folders([images], size, data, what="generator training images")
        train_generator(train_images, RunConfig(out=str(run_dir), epochs=epochs, batch_size=batch_size, seed=seed,
                                                resume=last.is_file()), family=family)
    generate(last, n_generated, out, seed=seed)


def run_demo(
    out: str | Path = "vitprint-demo",
    preset: str = "tiny",
    per_class: int = 60,
    members: int = 40,
    test_members: int = 24,
    n_generated: int = 500,
    family: str = "vae",
    gen_epochs: int = 500,
    null: bool = True,
    pretrain_epochs: int = 30,
    ae_epochs: int = 20,
    lr: float = 3e-4,
    seed: int = 0,
    batch_size: int = 32,
    n_boot: int = 1000,
) -> dict[str, Path]:
    """Run (or finish) the demo in ``out``; returns the paths worth opening."""
    out = Path(out)
    cfg = model_config(preset)  # an unknown preset is refused before the folder records anything
    _check_settings(out, {"preset": preset, "per_class": per_class, "members": members, "test_members": test_members,
                          "n_generated": n_generated, "family": family, "gen_epochs": gen_epochs,
                          "pretrain_epochs": pretrain_epochs, "lr": lr, "seed": seed, "batch_size": batch_size})
    data = DataConfig(cache_dir=str(out / "cache"), val_fraction=0.15)
    public, data_root = out / "public", out / "data"
    dev, test = data_root / "dev", data_root / "test"

    if not _done(public / ".done"):
        log.info("1/6 making %d public phantom slices for encoder pretraining", per_class * len(CLASSES))
        with bar(total=per_class * len(CLASSES), desc="phantoms", unit="img") as pbar:
            make_phantoms(public, per_class=per_class, seed=seed + 1000, progress=pbar)
        (public / ".done").write_text("ok\n")
    if not _done(data_root / ".reals"):
        log.info("2/6 making %d member and %d non-member patients", members + test_members, members + test_members)
        write_membership_split(data_root, members, test_members, seed=seed)
        (data_root / ".reals").write_text("ok\n")

    n = members + test_members
    if not _done(data_root / ".generated"):
        log.info("3/6 training a %s on the %d members only (%d epochs)", family, n, gen_epochs)
        _generator(data_root / "members", out / "generator", dev / "generated", family, gen_epochs, n_generated,
                   cfg.image_size, data, batch_size, seed)
        (data_root / ".generated").write_text("ok\n")
    null_dev = data_root / "null-generator" / "dev"
    if null and not _done(data_root / ".null-generated"):
        log.info("4/6 training the same %s on %d other patients (it never sees a member)", family, n)
        others = data_root / "other-patients"
        others.mkdir(parents=True, exist_ok=True)
        for i in range(n):  # stream 9: patients apart from the members, the non-members and the public set
            save_palette_png(phantom(np.random.default_rng([seed, 9, i]), CLASSES[i % len(CLASSES)], 256),
                             others / f"other_{i:04d}.png")
        for group in ("real_used", "real_not_used"):  # the same development images, judged against it
            shutil.copytree(dev / group, null_dev / group, dirs_exist_ok=True)
        _generator(others, out / "null-generator", null_dev / "generated", family, gen_epochs, n_generated,
                   cfg.image_size, data, batch_size, seed)
        (data_root / ".null-generated").write_text("ok\n")

    pre_dir = out / "pretrain"
    if not _done(pre_dir / "summary.json"):
        log.info("5/6 pretraining the %s encoder on the public phantoms", preset)
        last, _ = checkpoint_paths(pre_dir)
        pretrain(public, cfg, RunConfig(out=str(pre_dir), epochs=pretrain_epochs, batch_size=batch_size, seed=seed,
                                        resume=last.is_file()), dataclasses.replace(PRETRAIN_OPTIM, lr=lr), data=data)

    log.info("6/6 detecting which real images the generator was trained on")
    # The detectors work at the size the generator made its images; up to 64 px align_nn searches the coarser
    # pose grid, as good there as the finer default on the benchmark's phantom VAE cells and 3-4x cheaper.
    sized = {"align_size": cfg.image_size, "copy_size": max(32, cfg.image_size),
             **(COARSE_GRID if cfg.image_size <= 64 else {})}
    det = DetectConfig(out=str(out / "detect"), encoder=str(pre_dir / "encoder.safetensors"), ae_epochs=ae_epochs,
                       ae_batch_size=batch_size, ae_lr=lr, seed=seed, n_boot=n_boot,
                       scores=ScoreConfig(extra=sized), force=True)
    inputs = resolve_inputs(dev=str(dev), unknown=[str(test / "real_unknown")])
    summary = detect(inputs, cfg, det, data)
    null_summary = None
    if null:
        log.info("the same detection against the generator that never saw the members (no autoencoder needed)")
        null_det = dataclasses.replace(det, out=str(out / "detect-null-generator"), report=False,
                                       scores=ScoreConfig(detectors=NULL_DETECTORS, extra=sized))
        null_summary = detect(resolve_inputs(dev=str(null_dev)), cfg, null_det, data)
    return {
        "summary": summary,
        "null summary": null_summary,
        "report": Path(summary["report"]),
        "run file": Path(summary["run_file"]),
        "test truth": data_root / "test_truth.csv",
        "scores": out / "detect" / "scores.csv",
        "evaluation": out / "detect" / "evaluation.json",
        "challenge-style data": data_root,
    }
