"""``copy_nn``: nearest generated images in a learned copy-detection embedding.

A small CNN is trained contrastively (SimCLR's NT-Xent) on the generated
images, with augmentations that model what a generator does to a training
image it copies (shift, rotation, zoom, local deformation, re-windowing,
blur, noise; no flips). In that space a copy sits next to its original
whatever those changes, and two different slices do not. The line of work:
copy detection for generated medical images (Dar et al. 2024; DeepSSIM) and
SSCD for natural images.

Score = -(mean cosine distance to the ``copy_k`` nearest generated images).
With ``cache_dir``, the trained network and the generated set's embeddings
are stored under a key made of the images' hash and the settings, so a rerun
(or the test set against the same generated images) neither retrains nor
re-encodes.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from vitprint import distributed
from vitprint.data.imageset import atomic_write, save_npy
from vitprint.errors import VitprintError
from vitprint.membership.base import Detector, as_pixels
from vitprint.membership.knn import index_store, knn_distances
from vitprint.membership.registry import register_detector
from vitprint.models.copy_net import CopyNet
from vitprint.training.checkpoint import read_state_dict, save_weights
from vitprint.training.contrastive import ContrastiveConfig, embed, train_copy_net

log = logging.getLogger(__name__)


@register_detector
class CopyNN(Detector):
    name = "copy_nn"
    image_size = 96

    def __init__(self, copy_size: int = 96, copy_k: int = 1, copy_steps: int = 300, copy_width: int = 16, seed: int = 0,
                 cache_dir: str | Path | None = None, device: str = "cpu", index: str = "auto"):
        if copy_size < 32:
            raise VitprintError(f"copy_size must be >= 32, got {copy_size}")
        if copy_k < 1:
            raise VitprintError(f"copy_k must be >= 1, got {copy_k}")
        self.image_size, self.k = copy_size, copy_k
        self.train_cfg = ContrastiveConfig(steps=copy_steps, width=copy_width, seed=seed)
        self.cache_dir = Path(cache_dir) / "copy_nn" if cache_dir else None
        self.device, self.index = torch.device(device), index

    def _key(self, pixels) -> str:
        h = hashlib.sha1(json.dumps({"cfg": asdict(self.train_cfg), "shape": list(pixels.shape), "v": 1}).encode())
        for start in range(0, len(pixels), 4096):
            h.update(np.ascontiguousarray(pixels[start:start + 4096]).tobytes())
        return h.hexdigest()[:24]

    def fit(self, generated, reference=None) -> "CopyNN":
        pixels = as_pixels(generated)
        key = self._key(pixels)
        weights = self.cache_dir / f"{key}.safetensors" if self.cache_dir else None
        vectors = self.cache_dir / f"{key}.npy" if self.cache_dir else None
        self.model_ = CopyNet(self.train_cfg.width, self.train_cfg.dim)
        # With several processes (vitprint.distributed.sharded) the main one reads the store or trains, and
        # sends the weights to the others; the generated set's embedding is then shared out.
        stored = distributed.on_main(lambda: self._stored(weights, vectors))
        if stored is not None:
            self.model_.load_state_dict(stored[0])  # checked to fit in _stored (the other processes load it here)
            self.embeddings_ = stored[1]
            self.model_.to(self.device).eval()
            log.info("copy_nn: reusing the embedding trained on these %d generated images (%s)", len(pixels), key)
            return self

        def train():
            model, losses = train_copy_net(pixels, self.train_cfg, device=self.device)
            return {k: v.cpu() for k, v in model.state_dict().items()}, losses

        state, self.losses_ = distributed.on_main(train)
        self.model_.load_state_dict(state)
        self.model_.to(self.device).eval()
        self.embeddings_ = embed(self.model_, pixels)
        if weights is not None and distributed.leads():
            weights.parent.mkdir(parents=True, exist_ok=True)
            save_weights(weights, self.model_, {"kind": "copy_net", **self.model_.cfg})
            atomic_write(vectors, lambda tmp: save_npy(tmp, self.embeddings_))
        return self

    def _stored(self, weights: Path | None, vectors: Path | None):
        """``(state dict, embeddings)`` from the store, or None (nothing stored, or a damaged entry)."""
        if weights is None or not weights.is_file() or not vectors.is_file():
            return None
        try:
            state = read_state_dict(weights)
            self.model_.load_state_dict(state)  # it fits this network (a misfit is overwritten by training)
            return state, np.load(vectors, mmap_mode="r")  # read as the search streams
        except (VitprintError, ValueError, RuntimeError, OSError, EOFError) as exc:
            log.warning("copy_nn: discarding a damaged cache entry %s (%s)", weights, exc)
            return None

    def fit_like(self, fitted: "CopyNN", generated, reference=None) -> "CopyNN":
        """The same trained embedding (distances on one scale), the new set's embeddings."""
        self.model_ = fitted.model_
        self.embeddings_ = embed(self.model_, as_pixels(generated))
        return self

    def index_store(self) -> dict:
        """Where an approximate index of the generated embeddings is kept (beside the cache's entries); the
        embeddings' key is computed once per set, not on every search."""
        if getattr(self, "_store_of", None) is not self.embeddings_:
            self._store_of = self.embeddings_
            self._store = index_store(self.cache_dir.parent if self.cache_dir else None, self.index, self.embeddings_)
        return self._store

    def embed(self, images) -> np.ndarray:
        """``(N, dim)`` unit-norm embeddings of uint8 images at ``copy_size``."""
        return embed(self.model_, as_pixels(images))

    def _score(self, real):
        d, idx = knn_distances(self.embed(real), self.embeddings_, k=self.k, metric="cosine", device=self.device,
                               progress=False, index=self.index, **self.index_store())
        return -d.mean(1).astype(np.float64), idx[:, 0]
