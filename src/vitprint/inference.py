"""Batched inference with a trained model: reconstructions, errors and latents."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vitprint import distributed
from vitprint.config import DataConfig, ModelConfig, from_dict
from vitprint.data.dataset import to_device
from vitprint.data.imageset import ImageSet, atomic_write
from vitprint.data.sources import read_folders, subset
from vitprint.device import pick_device, pick_precision
from vitprint.evaluation.plots import image_pairs
from vitprint.errors import VitprintError
from vitprint.progress import bar
from vitprint.models.autoencoder import Autoencoder
from vitprint.training.checkpoint import load_checkpoint, read_meta


def load_autoencoder(path: str | Path, device: torch.device | str = "cpu") -> Autoencoder:
    """An Autoencoder rebuilt from the config inside its checkpoint, in eval mode."""
    meta = read_meta(path) if Path(path).is_file() else None
    if meta is None:
        raise VitprintError(f"checkpoint not found: {path}")
    if meta.get("kind") != "autoencoder":
        raise VitprintError(f"{path} is not an autoencoder checkpoint (it holds {meta.get('kind', 'unknown')!r})")
    model = Autoencoder(from_dict(ModelConfig, meta["model"]))
    load_checkpoint(path, model)
    model.summary = {"checkpoint": str(path), "epochs": meta.get("run", {}).get("epochs")}  # how it was trained
    return model.to(device).eval()


@dataclass
class Reconstructions:
    """Per-image errors (``(N,)``) and, when kept, the reconstructions ``(N, S, S)`` in [-1, 1]."""

    mse: np.ndarray
    mae: np.ndarray
    images: np.ndarray | None


def _autocast(device: torch.device, precision: str):
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(pick_precision(precision, device))
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


@torch.no_grad()
def reconstruct(model: Autoencoder, images: ImageSet, batch_size: int = 32, keep: bool = False,
                precision: str = "fp32", progress: bool = True) -> Reconstructions:
    """Reconstruct every image of ``images`` (an ImageSet or uint8 ``(N, S, S)`` at the model's size)."""
    device = next(model.parameters()).device
    pixels = getattr(images, "pixels", images)
    if pixels.shape[-1] != model.cfg.image_size:
        raise VitprintError(f"images are {pixels.shape[-1]} px but the model expects {model.cfg.image_size} px")
    mse, mae, kept = [], [], []
    for start in bar(range(0, len(pixels), batch_size), enabled=progress, desc="reconstructing", unit="batch"):
        x = to_device(pixels[start:start + batch_size], device)
        with _autocast(device, precision):
            y = model(x)
        diff = y.float() - x
        mse.append(diff.pow(2).mean(dim=(1, 2, 3)).cpu().numpy())
        mae.append(diff.abs().mean(dim=(1, 2, 3)).cpu().numpy())
        if keep:
            kept.append(y.float()[:, 0].cpu().numpy())
    return Reconstructions(np.concatenate(mse), np.concatenate(mae), np.concatenate(kept) if keep else None)


@torch.no_grad()
def encode(encoder: torch.nn.Module, images: ImageSet, batch_size: int = 64, precision: str = "fp32",
           progress: bool = True) -> np.ndarray:
    """``(N, latent_dim)`` float32 latents of every image."""
    device = next(encoder.parameters()).device
    pixels = getattr(images, "pixels", images)

    def batch(start: int, stop: int) -> np.ndarray:
        with _autocast(device, precision):
            return encoder(to_device(pixels[start:stop], device)).float().cpu().numpy()

    # Inside vitprint.distributed.sharded() the batches are shared over the processes.
    return np.concatenate(distributed.map_chunks(batch, len(pixels), batch_size, enabled=progress, desc="encoding",
                                                 unit="batch"))


def reconstruct_folders(checkpoint: str | Path, folders: list[str | Path], out: str | Path, batch_size: int = 32,
                        save_images: bool = False, precision: str = "fp32", device: str = "auto",
                        data: DataConfig = DataConfig(), progress: bool = True) -> dict:
    """Reconstruct every image below ``folders`` with a trained autoencoder. Writes ``out/errors.csv``
    (id, path, mse, mae), ``out/recon_grid.png`` and, with ``save_images``, each reconstruction as PNG
    under ``out/reconstructions``. Returns the image count, the mean MSE and the files written."""
    model = load_autoencoder(checkpoint, pick_device(device))
    images = read_folders(folders, model.cfg.image_size, data)
    rec = reconstruct(model, images, batch_size=batch_size, keep=save_images, precision=precision, progress=progress)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    def errors_csv(tmp):
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "path", "mse", "mae"])
            for i, (mse, mae) in enumerate(zip(rec.mse, rec.mae)):
                w.writerow([images.ids[i], str(images.paths[i]), f"{mse:.6g}", f"{mae:.6g}"])

    atomic_write(out / "errors.csv", errors_csv)
    show = subset(images, np.arange(min(8, len(images))))
    shown = reconstruct(model, show, keep=True, precision=precision, progress=False)
    image_pairs(show.pixels, shown.images, out / "recon_grid.png", captions=[f"mse {v:.4f}" for v in shown.mse])
    if save_images:
        for i, img in enumerate(rec.images):
            target = out / "reconstructions" / Path(images.ids[i].replace("#", "_")).with_suffix(".png")
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.clip((img + 1) * 127.5, 0, 255).round().astype(np.uint8)).save(target)
    return {"images": len(images), "mean_mse": float(rec.mse.mean()), "errors": str(out / "errors.csv"),
            "grid": str(out / "recon_grid.png")}
