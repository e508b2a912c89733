"""``recon_cal``: the seed's reconstruction score, calibrated by a reference autoencoder.

A second autoencoder, of the same configuration and trained the same way, learns
the reference images (real images the generator never saw). An image the
generator was trained on should be reconstructed better by the autoencoder of
the generated images than by that of the reference: score = MSE under the
reference autoencoder - MSE under the generated one (the seed's idea as a
likelihood ratio, as GAN-Leaks calibrates its distances). Where the reference
holds real images being scored, the registry's cross-fitting trains one
reference autoencoder per fold, so no image is reconstructed by a model that saw it.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np

from vitprint import distributed
from vitprint.config import DataConfig, OptimConfig, RunConfig
from vitprint.errors import VitprintError
from vitprint.inference import reconstruct
from vitprint.membership.base import Detector, as_pixels
from vitprint.membership.registry import register_detector
from vitprint.training.autoencoder import train_autoencoder

log = logging.getLogger(__name__)


@register_detector
class ReconCal(Detector):
    name = "recon_cal"
    needs_autoencoder = True
    needs_reference = True

    def __init__(self, autoencoder=None, ref_epochs: int | None = None, ref_lr: float = 1e-4,
                 encoder_path: str | None = None, batch_size: int = 32, precision: str = "fp32",
                 device: str = "cpu", seed: int = 0, cache_dir=None):
        if autoencoder is None:
            raise VitprintError("recon_cal needs a trained autoencoder")
        epochs = ref_epochs or (getattr(autoencoder, "summary", None) or {}).get("epochs") or 10
        if epochs < 1:
            raise VitprintError(f"ref_epochs must be >= 1, got {ref_epochs}")
        self.autoencoder, self.ref_epochs, self.ref_lr, self.encoder_path = autoencoder, int(epochs), ref_lr, encoder_path
        self.batch_size, self.precision, self.device, self.seed = batch_size, precision, device, seed
        self.cache_dir = cache_dir

    def fit(self, generated, reference=None) -> "ReconCal":
        if reference is None:
            raise VitprintError("recon_cal needs a reference set (real images the generator never saw)")
        ref = as_pixels(reference)
        log.info("recon_cal: training the reference autoencoder on %d images for %d epochs", len(ref), self.ref_epochs)
        # A scratch folder (in the cache when there is one: with several processes, possibly on several
        # machines, they all train into the folder the main process chose, data-parallel).
        def scratch() -> str:
            where = Path(self.cache_dir) / "recon_cal" if self.cache_dir else None
            if where is not None:
                where.mkdir(parents=True, exist_ok=True)
            return tempfile.mkdtemp(prefix="vitprint-recon-cal-", dir=where)

        tmp = distributed.on_main(scratch)
        try:
            model = train_autoencoder(ref, self.autoencoder.cfg,
                                      RunConfig(out=tmp, epochs=self.ref_epochs, batch_size=self.batch_size,
                                                seed=self.seed, device=self.device, precision=self.precision),
                                      OptimConfig(lr=self.ref_lr), DataConfig(no_cache=True, val_fraction=0.1),
                                      encoder_path=self.encoder_path)
            distributed.barrier()  # every process has read the checkpoint before the folder goes
        finally:
            if distributed.leads():
                shutil.rmtree(tmp, ignore_errors=True)
        self.reference_ae_ = model.to(self.device).eval()
        return self

    def _score(self, real):
        on_generated = reconstruct(self.autoencoder, real, batch_size=self.batch_size, precision=self.precision,
                                   progress=False).mse
        on_reference = reconstruct(self.reference_ae_, real, batch_size=self.batch_size, precision=self.precision,
                                   progress=False).mse
        return (on_reference - on_generated).astype(np.float64), None
