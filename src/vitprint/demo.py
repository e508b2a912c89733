"""The demo: the whole pipeline on built-in phantom data, resumable step by step."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path


from vitprint.config import DataConfig, OptimConfig, RunConfig
from vitprint.data.phantoms import CLASSES, make_phantoms
from vitprint.models.presets import model_config
from vitprint.progress import bar
from vitprint.training.autoencoder import train_autoencoder
from vitprint.training.pretrain import PRETRAIN_OPTIM, pretrain

log = logging.getLogger(__name__)


def run_demo(
    out: str | Path = "vitprint-demo",
    preset: str = "tiny",
    per_class: int = 60,
    pretrain_epochs: int = 30,
    train_epochs: int = 30,
    lr: float = 5e-4,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = True,
) -> dict[str, Path]:
    """Phantoms -> encoder pretraining -> autoencoder training -> reconstruction grid.

    Each finished step leaves a marker (its summary file) and is skipped when the
    demo runs again in the same folder. Returns the paths worth opening.
    """
    out = Path(out)
    data = DataConfig(cache_dir=str(out / "cache"), val_fraction=0.15)
    cfg = model_config(preset)

    phantoms = out / "phantoms"
    if not (phantoms / ".done").is_file():
        log.info("step 1/3: making %d phantom CT slices in %s", per_class * len(CLASSES), phantoms)
        with bar(total=per_class * len(CLASSES), enabled=progress, desc="phantoms", unit="img") as pbar:
            make_phantoms(phantoms, per_class=per_class, seed=seed, progress=pbar)
        (phantoms / ".done").write_text("ok\n")

    pre_dir = out / "pretrain"
    if not (pre_dir / "summary.json").is_file():
        log.info("step 2/3: pretraining the %s encoder as a 4-class classifier", preset)
        resume = (pre_dir / "checkpoints" / "last.safetensors").is_file()
        pretrain(phantoms, cfg, RunConfig(out=str(pre_dir), epochs=pretrain_epochs, batch_size=batch_size,
                                          seed=seed, resume=resume),
                 dataclasses.replace(PRETRAIN_OPTIM, lr=lr), data=data)

    ae_dir = out / "autoencoder"
    if not (ae_dir / "summary.json").is_file():
        log.info("step 3/3: training the autoencoder from the pretrained encoder")
        resume = (ae_dir / "checkpoints" / "last.safetensors").is_file()
        train_autoencoder([phantoms / "train"], cfg, RunConfig(out=str(ae_dir), epochs=train_epochs,
                          batch_size=batch_size, seed=seed, resume=resume), OptimConfig(lr=lr), data=data,
                          encoder_path=str(pre_dir / "encoder.safetensors"))
    return {
        "phantoms": phantoms,
        "confusion matrix": pre_dir / "confusion_test.png",
        "reconstruction grid": ae_dir / "recon_grid.png",
        "autoencoder checkpoint": ae_dir / "checkpoints" / "best.safetensors",
    }
