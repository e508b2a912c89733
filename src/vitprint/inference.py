"""Batched inference with a trained model: reconstructions, errors and latents."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vitprint.config import ModelConfig, from_dict
from vitprint.data.dataset import to_model_range
from vitprint.data.imageset import ImageSet
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
    return model.to(device).eval()


@dataclass
class Reconstructions:
    """Per-image errors (``(N,)``) and, when kept, the reconstructions ``(N, S, S)`` in [-1, 1]."""

    mse: np.ndarray
    mae: np.ndarray
    images: np.ndarray | None


def _autocast(device: torch.device, precision: str):
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
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
        x = to_model_range(pixels[start:start + batch_size])[:, None].to(device)
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
    out = []
    for start in bar(range(0, len(pixels), batch_size), enabled=progress, desc="encoding", unit="batch"):
        x = to_model_range(pixels[start:start + batch_size])[:, None].to(device)
        with _autocast(device, precision):
            out.append(encoder(x).float().cpu().numpy())
    return np.concatenate(out)
