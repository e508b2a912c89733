"""Supervised pretraining of the encoder as a classifier (the seed's lung-CT step)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vitprint.config import DataConfig, ModelConfig, OptimConfig, RunConfig, to_dict
from vitprint.data.dataset import DeviceBatches, ImageTensors, SeedAugment
from vitprint.data.folders import class_tree
from vitprint.data.sources import read_files
from vitprint import distributed
from vitprint.evaluation.metrics import classification_metrics, confusion
from vitprint.evaluation.plots import confusion_plot, loss_curve
from vitprint.models.autoencoder import Classifier
from vitprint.training.checkpoint import init_encoder, load_checkpoint, save_weights
from vitprint.device import pick_device
from vitprint.training.engine import Task, adam, checkpoint_paths, fit, prepare_out, read_history

log = logging.getLogger(__name__)

# The seed's optimiser for pretraining: Adam 1e-4, weight decay 1e-5, StepLR(10, 0.9).
PRETRAIN_OPTIM = OptimConfig(lr=1e-4, weight_decay=1e-5, step_size=10, gamma=0.9)


def _predict(model, loader, acc=None) -> tuple[np.ndarray, np.ndarray, float]:
    """Truth, predictions and mean loss over a loader (gathered across processes when ``acc``)."""
    preds, truth, loss_sum, n = [], [], 0.0, 0
    device = next(model.parameters()).device
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").item()
        n += len(y)
        p, t = (logits.argmax(1), y) if acc is None else acc.gather_for_metrics((logits.argmax(1), y))
        preds.append(p.cpu().numpy())
        truth.append(t.cpu().numpy())
    return np.concatenate(truth), np.concatenate(preds), loss_sum / max(n, 1)


def pretrain(
    data_root: str | Path,
    model_cfg: ModelConfig,
    run: RunConfig,
    optim: OptimConfig = PRETRAIN_OPTIM,
    data: DataConfig = DataConfig(),
    vit_weights: str | None = None,
    pretrained_hub: bool = False,
    augment: bool = True,
) -> dict[str, Any]:
    """Train ``Classifier`` on a class-folder tree; returns a summary of the run.

    Writes to ``run.out``: ``encoder.safetensors`` (the best epoch's encoder),
    checkpoints, ``metrics.jsonl``, ``loss_curve.png``, ``confusion_valid.png``
    (and ``confusion_test.png`` plus test metrics when a ``test/`` split exists).
    """
    out = prepare_out(run)
    splits = class_tree(data_root, val_fraction=data.val_fraction, seed=run.seed)
    classes = splits["train"].classes
    sets = {
        name: read_files(lf.files, model_cfg.image_size, data, labels=lf.labels, what=f"{name} images")
        for name, lf in splits.items()
    }
    log.info("classes: %s; %s", ", ".join(classes),
             ", ".join(f"{k} {len(v)}" for k, v in sets.items()))

    torch.manual_seed(run.seed)
    model = Classifier(model_cfg, len(classes), pretrained_hub=pretrained_hub)
    init_encoder(model.encoder, vit_weights=vit_weights)
    optimizer = adam(model.parameters(), run, lr=optim.lr, weight_decay=optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=optim.step_size, gamma=optim.gamma)
    n_classes = len(classes)
    meta = {"kind": "classifier", "model": to_dict(model_cfg), "classes": classes,
            "run": to_dict(run), "optim": to_dict(optim)}

    def step(m, batch):
        x, y = batch
        return F.cross_entropy(m(x), y), len(y)

    def evaluate(m, loader, acc):
        y, p, loss = _predict(m, loader, acc)
        return {"val_loss": loss, **{f"val_{k}": v for k, v in classification_metrics(y, p, n_classes).items()}}

    def on_best(m, record):
        save_weights(out / "encoder.safetensors", m.encoder,
                     {"kind": "encoder", "model": to_dict(model_cfg), "classes": classes, "epoch": record["epoch"]})

    task = Task(step, evaluate, monitor="val_macro_f1", higher_is_better=True, meta=meta, on_best=on_best,
                augment=SeedAugment() if augment else None)
    fit(model, optimizer, scheduler, ImageTensors(sets["train"]), ImageTensors(sets["valid"]), run, task)

    # Report the best epoch, reloaded, on validation (and test when there is one).
    _, best_path = checkpoint_paths(out)
    load_checkpoint(best_path, model)
    device = pick_device(run.device)
    model.to(device).eval()
    summary: dict[str, Any] = {"classes": classes, "encoder": str(out / "encoder.safetensors")}
    if not distributed.is_main():  # with several processes, the main one reports and writes the run's files
        return summary
    for name in [s for s in ("valid", "test") if s in sets]:
        loader = DeviceBatches(torch.utils.data.DataLoader(ImageTensors(sets[name]), batch_size=run.batch_size), device)
        with torch.no_grad():
            y, p, loss = _predict(model, loader)
        summary[name] = {"loss": loss, **classification_metrics(y, p, n_classes)}
        confusion_plot(confusion(y, p, n_classes), classes, out / f"confusion_{name}.png",
                       title=f"{name}: best epoch")
    history = read_history(out)
    loss_curve(history, out / "loss_curve.png")
    summary["epochs"] = len(history)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
