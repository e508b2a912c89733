"""Training the ViT autoencoder on image folders (MSE, Adam)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vitprint import distributed
from vitprint.config import DataConfig, ModelConfig, OptimConfig, RunConfig, to_dict
from vitprint.data.dataset import ImageTensors
from vitprint.data.imageset import ImageSet
from vitprint.errors import VitprintError
from vitprint.data.sources import read_folders, split, subset
from vitprint.evaluation.plots import image_pairs, loss_curve
from vitprint.inference import reconstruct
from vitprint.models.autoencoder import Autoencoder
from vitprint.training.checkpoint import init_encoder, load_checkpoint
from vitprint.device import pick_device
from vitprint.training.engine import Task, adam, checkpoint_paths, fit, prepare_out, read_history

log = logging.getLogger(__name__)

AE_OPTIM = OptimConfig(lr=1e-4)


def train_autoencoder(
    images: list[str | Path] | ImageSet | np.ndarray,
    model_cfg: ModelConfig,
    run: RunConfig,
    optim: OptimConfig = AE_OPTIM,
    data: DataConfig = DataConfig(),
    encoder_path: str | None = None,
    vit_weights: str | None = None,
    freeze_encoder: bool = False,
    pretrained_hub: bool = False,
    grid_size: int = 8,
) -> Autoencoder:
    """Train the autoencoder on image folders, an ``ImageSet`` or uint8 images ``(N, S, S)``; returns the
    model at its best validation epoch, in eval mode, with the run's summary (best validation MSE,
    epochs, image counts) as ``model.summary``.

    Writes to ``run.out``: checkpoints (``checkpoints/best.safetensors`` reloads
    the returned model), ``metrics.jsonl``, ``loss_curve.png``, ``recon_grid.png``,
    ``summary.json``.
    """
    out = prepare_out(run)
    if isinstance(images, np.ndarray):
        images = ImageSet.from_pixels(images, "train")
    elif not isinstance(images, ImageSet):
        images = read_folders(images, model_cfg.image_size, data)
    if images.size != model_cfg.image_size:
        raise VitprintError(f"the images are {images.size} px but the model reads {model_cfg.image_size} px")
    train_set, val_set = split(images, data.val_fraction, run.seed)
    log.info("%d images: %d train, %d validation", len(images), len(train_set), len(val_set))

    torch.manual_seed(run.seed)
    model = Autoencoder(model_cfg, pretrained_hub=pretrained_hub)
    init_encoder(model.encoder, vit_weights=vit_weights, encoder_path=encoder_path)
    if freeze_encoder:
        model.encoder.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    if pick_device(run.device).type == "cuda":  # the decoder's convolutions run faster on NHWC tensors there
        model.decoder.to(memory_format=torch.channels_last)
    optimizer = adam(params, run, lr=optim.lr, weight_decay=optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=optim.step_size, gamma=optim.gamma)
    meta = {"kind": "autoencoder", "model": to_dict(model_cfg), "run": to_dict(run), "optim": to_dict(optim),
            "freeze_encoder": freeze_encoder, "encoder_init": encoder_path or vit_weights}

    def step(m, x):
        return F.mse_loss(m(x).float(), x), len(x)

    def evaluate(m, loader, acc):
        per_image = []  # every process's images, gathered (without the repeats that pad the last batch)
        for x in loader:
            e = F.mse_loss(m(x).float(), x, reduction="none").flatten(1).mean(1)
            per_image.append(e if acc is None else acc.gather_for_metrics(e))
        return {"val_loss": torch.cat(per_image).mean().item() if per_image else 0.0}

    task = Task(step, evaluate, monitor="val_loss", higher_is_better=False, meta=meta)
    fit(model, optimizer, scheduler, ImageTensors(train_set), ImageTensors(val_set), run, task)

    _, best_path = checkpoint_paths(out)
    load_checkpoint(best_path, model)
    model.eval()
    history = read_history(out)
    summary = {"checkpoint": str(best_path), "epochs": len(history),
               "best_val_loss": min(r["val_loss"] for r in history) if history else None,
               "train_images": len(train_set), "val_images": len(val_set)}
    if distributed.is_main():  # with several processes, the main one writes the run's files
        show = subset(val_set, np.arange(min(grid_size, len(val_set))))
        rec = reconstruct(model, show, keep=True, progress=False)
        image_pairs(show.pixels, rec.images, out / "recon_grid.png",
                    captions=[f"mse {v:.4f}" for v in rec.mse])
        loss_curve(history, out / "loss_curve.png")
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    model.summary = summary
    return model
