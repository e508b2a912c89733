"""``align_nn``: registration-aware pixel similarity (the pixel test that survives a shifted copy).

For each real image, the generated images that align best with it at low
resolution (``coarse_size``, every generated image, by the same correlation)
are the candidates; each candidate is then compared at full resolution by the maximum normalised cross-correlation over every shift up to
``max_shift`` pixels and rotations up to ``max_rotation`` degrees (a grid at
low resolution, refined at full resolution), computed with FFTs. Both images are band-passed first (a difference of Gaussians, 2-6 px at
256 px by default; with several ``bands`` their correlations are averaged):
the broad anatomy every slice shares weighs little, the detail a copy keeps
(vessels, texture) weighs much, and pixel noise and a little blur are filtered
out. Normalised correlation ignores
brightness and contrast changes, so re-windowed copies still match.

Score = the best correlation (in [-1, 1]); the nearest generated image is the
candidate that gave it. Pixel correlation with the training set is how
copies made by medical generators have been found (Akbar et al.); this makes
it shift- and intensity-robust and fast.
"""

from __future__ import annotations


import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from vitprint.data.dataset import to_model_range
from vitprint.data.filters import gaussian_response
from vitprint.errors import VitprintError
from vitprint.membership.base import Detector, as_pixels
from vitprint.membership.registry import register_detector
from vitprint.progress import bar


def _rotate(u8: np.ndarray, angles) -> np.ndarray:
    """uint8 ``(m, S, S)`` turned by ``angles`` degrees (one for all, or one per image), bilinear."""
    angles = np.broadcast_to(np.asarray(angles, float), (len(u8),))
    if not angles.any():
        return u8
    x = torch.from_numpy(np.ascontiguousarray(u8))[:, None]
    out = [x[i] if a == 0 else TF.rotate(x[i], float(a), interpolation=TF.InterpolationMode.BILINEAR)
           for i, a in enumerate(angles)]
    return torch.stack(out)[:, 0].numpy()


@register_detector
class AlignNN(Detector):
    name = "align_nn"
    calibratable = True
    image_size = 256

    def __init__(self, align_size: int = 256, max_shift: float = 0.06, max_rotation: float = 10.0,
                 rotation_step: float = 2.5,
                 candidates: int = 16, bands: tuple[float, ...] = (2.0,), sigma_high: float = 6.0,
                 coarse_size: int = 64,
                 device: str = "cpu"):
        if align_size < 16:
            raise VitprintError(f"align_size must be >= 16, got {align_size}")
        if not 0 <= max_shift < 0.5:
            raise VitprintError(f"max_shift must be a fraction of the image in [0, 0.5), got {max_shift}")
        if candidates < 1:
            raise VitprintError(f"candidates must be >= 1, got {candidates}")
        bands = tuple(float(b) for b in (bands if isinstance(bands, (list, tuple)) else [bands]))
        if not bands or not all(0 <= b < sigma_high for b in bands):
            raise VitprintError(f"need 0 <= every band's low sigma < sigma_high, got {bands}, {sigma_high}")
        self.image_size = align_size
        if max_rotation < 0 or (max_rotation > 0 and rotation_step <= 0):
            raise VitprintError(f"need max_rotation >= 0 and rotation_step > 0, got {max_rotation}, {rotation_step}")
        self.max_shift, self.candidates = max_shift, candidates
        n_steps = int(max_rotation // rotation_step) if max_rotation else 0
        self.angles = tuple(float(a) for a in np.arange(-n_steps, n_steps + 1) * rotation_step)
        self.rotation_step = rotation_step
        self.bands, self.sigma_high, self.coarse_size = bands, sigma_high, coarse_size
        self.device = torch.device(device)

    def fit(self, generated, reference=None) -> "AlignNN":
        self.generated_ = as_pixels(generated)
        if self.generated_.shape[-1] != self.image_size:
            raise VitprintError(f"align_nn works on {self.image_size} px images, got {self.generated_.shape[-1]} px")
        self.coarse_size_ = min(self.coarse_size, self.image_size)
        self.coarse_ = self._spectra(self.generated_, self.coarse_size_, batch=512)
        return self

    def _response(self, size: int, sigma_low: float) -> torch.Tensor:
        scale = size / 256  # the filter widths are given for 256-px images
        return (gaussian_response(size, sigma_low * scale, self.device)
                - gaussian_response(size, self.sigma_high * scale, self.device))

    def _spectra(self, u8, size: int, band: float | None = None, batch: int = 256) -> torch.Tensor:
        """uint8 ``(m, S, S)`` -> spectra ``(m, size, size//2+1)`` of the band-passed, unit-norm images.

        ``band`` is the low sigma of the band (default: the middle one of ``bands``)."""
        response = self._response(size, float(np.median(self.bands)) if band is None else band)
        out = []
        for start in range(0, len(u8), batch):
            x = to_model_range(np.asarray(u8[start:start + batch])).to(self.device)
            if x.shape[-1] != size:
                x = F.interpolate(x[:, None], size=(size, size), mode="area")[:, 0]
            band = torch.fft.irfft2(torch.fft.rfft2(x) * response, s=(size, size))
            band = band / band.flatten(1).norm(dim=1).clamp_min(1e-6)[:, None, None]
            out.append(torch.fft.rfft2(band))
        return torch.cat(out) if out else torch.zeros((0, size, size // 2 + 1), dtype=torch.complex64)

    def _best_shift(self, a: torch.Tensor, b: torch.Tensor, size: int) -> torch.Tensor:
        """Max normalised correlation over shifts within ``max_shift`` of spectra broadcast ``a * conj(b)``."""
        corr = torch.fft.irfft2(a * b.conj(), s=(size, size))
        m = int(round(self.max_shift * size))
        idx = torch.as_tensor(np.r_[0:m + 1, size - m:size] if m else [0], device=corr.device)
        return corr.index_select(-2, idx).index_select(-1, idx).flatten(-2).amax(-1)

    def _candidates(self, real_u8) -> tuple[np.ndarray, np.ndarray]:
        """``(b, k)`` indices of the generated images that align best at low resolution, and the best angle."""
        size = self.coarse_size_
        r = torch.stack([self._spectra(_rotate(real_u8, a), size) for a in self.angles], 1)  # (b, A, ...)
        k = min(self.candidates, len(self.coarse_))
        best_v = torch.full((len(r), k), -2.0)
        best_i = torch.zeros((len(r), k), dtype=torch.long)
        best_a = torch.zeros((len(r), k), dtype=torch.long)
        step = max(1, 2 ** 22 // (len(r) * len(self.angles) * size ** 2))
        for start in range(0, len(self.coarse_), step):
            g = self.coarse_[None, None, start:start + step]  # (1, 1, m, ...)
            v, a = self._best_shift(r[:, :, None], g, size).cpu().max(1)  # over angles: (b, m)
            cand_v = torch.cat([best_v, v], 1)
            cand_i = torch.cat([best_i, torch.arange(start, start + v.shape[1]).expand(len(r), -1)], 1)
            cand_a = torch.cat([best_a, a], 1)
            best_v, pos = cand_v.topk(k, dim=1)
            best_i, best_a = cand_i.gather(1, pos), cand_a.gather(1, pos)
        return best_i.numpy(), np.asarray(self.angles)[best_a.numpy()]

    @torch.no_grad()
    def _score(self, real):
        real = as_pixels(real)
        if real.shape[-1] != self.image_size:
            raise VitprintError(f"align_nn works on {self.image_size} px images, got {real.shape[-1]} px")
        s = self.image_size
        best = np.full(len(real), -np.inf)
        nearest = np.zeros(len(real), np.int64)
        chunk = max(1, 256 // min(self.candidates, len(self.generated_)))
        fine = (-self.rotation_step / 2, 0.0, self.rotation_step / 2) if len(self.angles) > 1 else (0.0,)
        for start in bar(range(0, len(real), chunk), desc="aligning", unit="batch"):
            x = np.asarray(real[start:start + chunk])
            ids, angles = self._candidates(x)  # (b, k) each
            uniq, inverse = np.unique(ids, return_inverse=True)
            where = torch.as_tensor(inverse.reshape(ids.shape))
            g_specs = [self._spectra(self.generated_[uniq], s, band)[where] for band in self.bands]
            per_angle = []
            for offset in fine:
                # Each candidate is compared with the real image turned by its best coarse angle (+ offset),
                # in every band; the bands' correlations are averaged (fine detail and broader structure).
                turned = np.stack([_rotate(x[i:i + 1].repeat(len(row), 0), row + offset)
                                   for i, row in enumerate(angles)]).reshape(-1, s, s)
                per_band = [self._best_shift(self._spectra(turned, s, band).reshape(*ids.shape, s, s // 2 + 1), g, s)
                            for band, g in zip(self.bands, g_specs)]
                per_angle.append(torch.stack(per_band).mean(0))
            ncc = torch.stack(per_angle).amax(0).cpu().numpy()  # (b, k)
            arg = ncc.argmax(1)
            rows = np.arange(len(ids))
            best[start:start + len(ids)] = ncc[rows, arg]
            nearest[start:start + len(ids)] = ids[rows, arg]
        return best, nearest
