"""``recon``: the seed's method.

The ViT autoencoder is trained on the generated images; real images the
generator was trained on lie closer to that distribution and reconstruct
better. Score = -MSE of the reconstruction.
"""

from __future__ import annotations

import numpy as np

from vitprint.errors import VitprintError
from vitprint.inference import reconstruct
from vitprint.membership.base import Detector
from vitprint.membership.registry import register_detector


@register_detector
class Recon(Detector):
    name = "recon"
    needs_autoencoder = True

    def __init__(self, autoencoder=None, batch_size: int = 64, precision: str = "fp32"):
        if autoencoder is None:
            raise VitprintError("recon needs a trained autoencoder")
        self.autoencoder, self.batch_size, self.precision = autoencoder, batch_size, precision

    def fit(self, generated, reference=None) -> "Recon":
        return self  # the autoencoder was trained on the generated images already

    def _score(self, real):
        rec = reconstruct(self.autoencoder, real, batch_size=self.batch_size, precision=self.precision)
        return -rec.mse.astype(np.float64), None
