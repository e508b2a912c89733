"""``latent_nn``: distance from a real image's autoencoder latent to its k nearest generated latents.

Score = -mean distance (cosine or L2) over the k nearest generated images.
With ``cache_dir``, the generated set's latents are stored under a key made of
the encoder's weights, the images and the precision, so a rerun (or the test
set against the same generated images and autoencoder) does not encode them
again; another autoencoder or other images make another key.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch

from vitprint import distributed
from vitprint.data.imageset import atomic_write, save_npy
from vitprint.errors import VitprintError
from vitprint.inference import encode
from vitprint.membership.base import Detector
from vitprint.membership.knn import METRICS, index_store, knn_distances
from vitprint.membership.registry import register_detector

log = logging.getLogger(__name__)


@register_detector
class LatentNN(Detector):
    name = "latent_nn"
    needs_autoencoder = True
    calibratable = True

    def __init__(self, autoencoder=None, k: int = 5, latent_metric: str = "cosine", batch_size: int = 64,
                 precision: str = "fp32", device: str = "cpu", index: str = "auto", cache_dir=None):
        if autoencoder is None:
            raise VitprintError("latent_nn needs a trained autoencoder")
        if k < 1:
            raise VitprintError(f"k must be >= 1, got {k}")
        if latent_metric not in METRICS:
            raise VitprintError(f"latent metric must be one of {METRICS}, got {latent_metric!r}")
        self.autoencoder, self.k, self.metric = autoencoder, k, latent_metric
        self.batch_size, self.precision, self.device, self.index = batch_size, precision, device, index
        self.cache_dir = Path(cache_dir) / "latent_nn" if cache_dir else None

    def _encode(self, pixels) -> torch.Tensor:
        return torch.from_numpy(encode(self.autoencoder.encoder, pixels, self.batch_size, self.precision))

    def _key(self, pixels) -> str:
        h = hashlib.sha1(f"{self.precision}|{tuple(pixels.shape)}|v1".encode())
        for name, t in self.autoencoder.encoder.state_dict().items():
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        for start in range(0, len(pixels), 4096):
            h.update(np.ascontiguousarray(pixels[start:start + 4096]).tobytes())
        return h.hexdigest()[:24]

    def fit(self, generated, reference=None) -> "LatentNN":
        pixels = getattr(generated, "pixels", generated)
        path = self.cache_dir / f"{self._key(pixels)}.npy" if self.cache_dir else None
        # With several processes the main one reads the store and sends what it found (all encode, or none).
        stored = distributed.on_main(lambda: self._stored(path, len(pixels)))
        if stored is not None:
            self.latents_ = stored
            log.info("latent_nn: reusing the stored latents of these %d generated images", len(pixels))
            return self
        self.latents_ = self._encode(generated).numpy()  # shared over the processes in vitprint.distributed.sharded()
        if path is not None and distributed.leads():
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda tmp: save_npy(tmp, self.latents_))
        return self

    @staticmethod
    def _stored(path, n: int):
        """The stored latents (memory-mapped: read from disk as the search streams through them), or None."""
        if path is None or not path.is_file():
            return None
        try:
            latents = np.load(path, mmap_mode="r")
            return latents if latents.shape[0] == n else None
        except (ValueError, OSError, EOFError) as exc:
            log.warning("latent_nn: discarding a damaged stored latents file %s (%s)", path, exc)
            return None

    def _score(self, real):
        kept = index_store(self.cache_dir.parent if self.cache_dir else None, self.index, self.latents_)
        d, idx = knn_distances(self._encode(real), self.latents_, k=self.k, metric=self.metric, device=self.device,
                               index=self.index, **kept)
        return -d.mean(1).astype(np.float64), idx[:, 0]
