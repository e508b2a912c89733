"""Where a real image and a generated one match best: the region pair shown as local evidence.

Generators often copy a region of a training slice rather than the whole slice.
Both images are band-passed (a difference of Gaussians, as ``align_nn`` does: the
anatomy every slice shares weighs little, the detail a copy keeps weighs much);
each tile of the real image is then matched against the generated image over
small shifts, and the tile and shift with the highest normalised correlation
are the best-matching region.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter


@dataclass
class Region:
    """The best-matching window: top-left corner and side in the real image, the shift that aligns the
    generated image to it, and the local correlation there (in [-1, 1])."""

    y: int
    x: int
    size: int
    shift: tuple[int, int]
    ncc: float

    def crops(self, real: np.ndarray, generated: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The window cut from the real image and from the aligned generated image."""
        aligned = np.roll(generated, self.shift, (0, 1))
        window = (slice(self.y, self.y + self.size), slice(self.x, self.x + self.size))
        return real[window], aligned[window]


def _band(img: np.ndarray, low: float, high: float) -> np.ndarray:
    x = img.astype(np.float64)
    return gaussian_filter(x, low) - gaussian_filter(x, high)


def best_region(real: np.ndarray, generated: np.ndarray, window: float = 0.25, max_shift: float = 0.1,
                bands: tuple[float, float] = (2.0, 6.0)) -> Region:
    """The best-matching region of two ``(S, S)`` images (``window`` and ``max_shift`` as fractions of S;
    ``bands`` the Gaussians' sigmas at 256 px).

    The real image is cut into overlapping tiles (stride half a tile); each tile is correlated with the
    generated image over every shift within ``max_shift`` (one FFT per tile), normalised by the energy of
    the generated image under the shifted tile, so a copied region is found wherever it was moved,
    however small a part of the image it is.
    """
    if real.shape != generated.shape or real.ndim != 2 or real.shape[0] != real.shape[1]:
        raise ValueError(f"two square images of one shape are needed, got {real.shape} and {generated.shape}")
    s = real.shape[0]
    low, high = (v * s / 256 for v in bands)
    a, b = _band(real, low, high), _band(generated, low, high)
    w = max(8, int(round(window * s)))
    starts = sorted(set(range(0, s - w + 1, max(1, w // 2))) | {s - w})
    tiles = [(y, x) for y in starts for x in starts]
    fb = np.fft.rfft2(b)
    box = np.zeros((s, s))
    box[:w, :w] = 1.0
    fbox = np.conj(np.fft.rfft2(box))
    # Sums of b and b^2 over the window whose top-left corner is p (circular, as the FFTs are).
    sum1, sum2 = np.fft.irfft2(fb * fbox, s=(s, s)), np.fft.irfft2(np.fft.rfft2(b * b) * fbox, s=(s, s))
    m = int(round(max_shift * s))
    shifts = np.r_[0:m + 1, -m:0] if m else np.array([0])
    dy, dx = np.meshgrid(shifts, shifts, indexing="ij")
    best = Region(0, 0, w, (0, 0), -2.0)
    for ty, tx in tiles:
        t = a[ty:ty + w, tx:tx + w]
        t = t - t.mean()
        norm_t = np.sqrt((t * t).sum())
        if norm_t < 1e-9:
            continue  # a flat tile matches nothing
        padded = np.zeros((s, s))
        padded[ty:ty + w, tx:tx + w] = t
        corr = np.fft.irfft2(np.fft.rfft2(padded) * np.conj(fb), s=(s, s))[dy % s, dx % s]
        py, px = (ty - dy) % s, (tx - dx) % s  # the generated window under the shifted tile
        energy = sum2[py, px] - sum1[py, px] ** 2 / (w * w)
        ncc = corr / (norm_t * np.sqrt(np.clip(energy, 1e-12, None)))
        i = np.unravel_index(int(ncc.argmax()), ncc.shape)
        if ncc[i] > best.ncc:
            best = Region(ty, tx, w, (int(dy[i]), int(dx[i])), float(ncc[i]))
    return best
