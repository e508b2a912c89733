"""Per-image membership scores: higher = more likely used to train the generator.

- ``recon``: the seed's method. The ViT autoencoder is trained on the generated
  images; real images the generator was trained on lie closer to that
  distribution and reconstruct better. Score = -MSE.
- ``latent_nn``: -mean distance from an image's latent to its k nearest
  generated latents (the autoencoder's encoder).
- ``pixel_nn``: GAN-Leaks' full black-box attack: -L2 distance to the nearest
  generated image in pixel space at a reduced size.
- ``*_cal``: a distance score minus the same distance to a reference set the
  generator never saw, which removes "this image is just typical".
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from vitprint.data.dataset import to_model_range
from vitprint.data.imageset import ImageSet
from vitprint.detection.knn import knn_distances
from vitprint.errors import VitprintError
from vitprint.inference import encode, reconstruct
from vitprint.models.autoencoder import Autoencoder

DETECTORS = ("recon", "latent_nn", "pixel_nn")


@dataclass
class ScoreConfig:
    detectors: tuple[str, ...] = DETECTORS
    k: int = 5
    latent_metric: str = "cosine"
    pixel_size: int = 64
    batch_size: int = 64
    precision: str = "fp32"

    def __post_init__(self) -> None:
        bad = [d for d in self.detectors if d not in DETECTORS]
        if bad or not self.detectors:
            raise VitprintError(f"detectors must be among {', '.join(DETECTORS)}, got {', '.join(bad) or 'none'}")
        if self.k < 1:
            raise VitprintError(f"k must be >= 1, got {self.k}")
        if self.pixel_size < 4:
            raise VitprintError(f"pixel_size must be >= 4, got {self.pixel_size}")


@dataclass
class Scores:
    """Scores of the real images, plus the nearest generated image for the evidence."""

    values: dict[str, np.ndarray] = field(default_factory=dict)
    nearest: dict[str, np.ndarray] = field(default_factory=dict)  # detector -> (N,) generated index


def score_names(detectors, with_reference: bool) -> list[str]:
    """The score columns ``compute_scores`` produces, in order."""
    names = []
    for d in DETECTORS:
        if d in detectors:
            names.append(d)
            if with_reference and d != "recon":
                names.append(f"{d}_cal")
    return names


def pixel_vectors(size: int):
    """uint8 ``(m, S, S)`` -> ``(m, size*size)`` in [-1, 1], area-downsampled."""

    def convert(u8) -> torch.Tensor:
        x = to_model_range(u8)[:, None]
        if x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="area")
        return x.flatten(1)

    return convert


def _nn_score(queries, refs, cfg: ScoreConfig, metric, to_vectors, device):
    d, idx = knn_distances(queries, refs, k=cfg.k if metric == "cosine" else 1, metric=metric,
                           to_vectors=to_vectors, device=device)
    return d.mean(1), idx[:, 0]


def compute_scores(
    real: ImageSet,
    generated: ImageSet,
    cfg: ScoreConfig = ScoreConfig(),
    autoencoder: Autoencoder | None = None,
    reference: ImageSet | None = None,
    device: torch.device | str = "cpu",
) -> Scores:
    """Every requested score for every real image, in one pass over the sets."""
    out = Scores()
    needs_model = {"recon", "latent_nn"} & set(cfg.detectors)
    if needs_model and autoencoder is None:
        raise VitprintError(f"{', '.join(sorted(needs_model))} need a trained autoencoder")
    if "recon" in cfg.detectors:
        rec = reconstruct(autoencoder, real, batch_size=cfg.batch_size, precision=cfg.precision)
        out.values["recon"] = -rec.mse
    if "latent_nn" in cfg.detectors:
        enc = autoencoder.encoder
        z_real = torch.from_numpy(encode(enc, real, cfg.batch_size, cfg.precision))
        z_gen = torch.from_numpy(encode(enc, generated, cfg.batch_size, cfg.precision))
        d, out.nearest["latent_nn"] = _nn_score(z_real, z_gen, cfg, cfg.latent_metric, None, device)
        out.values["latent_nn"] = -d
        if reference is not None:
            z_ref = torch.from_numpy(encode(enc, reference, cfg.batch_size, cfg.precision))
            d_ref, _ = _nn_score(z_real, z_ref, cfg, cfg.latent_metric, None, device)
            out.values["latent_nn_cal"] = d_ref - d
    if "pixel_nn" in cfg.detectors:
        conv = pixel_vectors(cfg.pixel_size)
        q = conv(real.pixels)
        d, out.nearest["pixel_nn"] = _nn_score(q, generated.pixels, cfg, "l2", conv, device)
        out.values["pixel_nn"] = -d
        if reference is not None:
            d_ref, _ = _nn_score(q, reference.pixels, cfg, "l2", conv, device)
            out.values["pixel_nn_cal"] = d_ref - d
    return out
