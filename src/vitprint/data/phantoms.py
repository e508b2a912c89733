"""Procedural CT-like axial chest slices, so every command runs without a dataset.

Each image is a different random "patient": body outline with a fat layer,
two lungs with branching vessels, heart, aorta, spine, ribs, sternum, the
scanner table and CT-like noise, built in Hounsfield units and shown in the
lung window. Four classes change the lungs: ``normal``, ``nodule`` (small round
lesions), ``mass`` (one large irregular lesion), ``effusion`` (fluid layering
in the dependent, posterior lung).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from vitprint.data.readers import WINDOWS
from vitprint.errors import VitprintError

log = logging.getLogger(__name__)

CLASSES = ("normal", "nodule", "mass", "effusion")
SPLITS = {"train": 0.7, "valid": 0.15, "test": 0.15}

AIR, FAT, SOFT, LUNG, BONE, MARROW, FLUID = -1000.0, -100.0, 40.0, -860.0, 900.0, 250.0, 15.0


def _ellipse(yy, xx, cy, cx, ry, rx, angle=0.0):
    c, s = np.cos(angle), np.sin(angle)
    dy, dx = yy - cy, xx - cx
    u = (dx * c + dy * s) / rx
    v = (-dx * s + dy * c) / ry
    return u * u + v * v <= 1.0


def _vessels(rng, grid, lung_mask, hilum, side):
    """Branching vessel trees from the hilum: random walks deposit blobs that thin out."""
    n = grid.shape[0]
    acc = np.zeros_like(grid)
    for _ in range(rng.integers(22, 32)):
        y, x = hilum
        angle = rng.uniform(-np.pi * 0.9, np.pi * 0.9) + (0 if side > 0 else np.pi)
        strength = rng.uniform(0.7, 1.0)
        for step in range(60):
            angle += rng.normal(0, 0.25)
            y += 0.012 * np.sin(angle)
            x += 0.012 * np.cos(angle)
            iy, ix = int((y + 1) / 2 * n), int((x + 1) / 2 * n)
            if not (0 <= iy < n and 0 <= ix < n):
                break
            acc[iy, ix] += strength * (1.0 - step / 70)
            if rng.random() < 0.04:  # a side branch: restart nearby with a new angle
                angle += rng.choice([-1, 1]) * rng.uniform(0.4, 0.9)
    acc = gaussian_filter(acc, sigma=n / 256 * 1.2)
    acc = acc / (acc.max() + 1e-6)
    return np.where(lung_mask, acc, 0.0)


@dataclass(frozen=True)
class Scanner:
    """What sets one cohort's images apart besides its patients: the scanner's noise (the scale of the white
    noise, in HU, before it is grained), its grain (the noise's correlation length in pixels) and the
    cohort's body build (a scale on the body outline). The defaults give the standard phantoms."""

    noise: float = 45.0
    grain: float = 0.8
    build: float = 1.0


def phantom_hu(rng: np.random.Generator, label: str, size: int = 256, scanner: Scanner = Scanner()) -> np.ndarray:
    """One ``(size, size)`` slice in Hounsfield units for class ``label``."""
    if label not in CLASSES:
        raise ValueError(f"unknown phantom class {label!r}")
    lin = np.linspace(-1, 1, size, dtype=np.float32)
    yy, xx = np.meshgrid(lin, lin, indexing="ij")  # rows go anterior (top) to posterior
    img = np.full((size, size), AIR, np.float32)

    # Patient build: size, shape, a small tilt and shift.
    by, bx = rng.uniform(0.55, 0.66) * scanner.build, rng.uniform(0.78, 0.9) * scanner.build
    cy, cx = rng.uniform(-0.02, 0.06), rng.uniform(-0.04, 0.04)
    tilt = rng.normal(0, 0.04)
    body = _ellipse(yy, xx, cy, cx, by, bx, tilt)
    inner = _ellipse(yy, xx, cy, cx, by - rng.uniform(0.03, 0.08), bx - rng.uniform(0.03, 0.08), tilt)
    img[body] = FAT
    img[inner] = SOFT

    # Table: a curved bright band under the patient's back.
    table_y = cy + by + rng.uniform(0.06, 0.1)
    table = (np.abs(yy - (table_y + 0.08 * xx**2)) < 0.018) & (np.abs(xx) < 0.95)
    img[table] = 150.0

    # Lungs, indented by the heart, with vessels.
    lung_ry, lung_rx = by * rng.uniform(0.72, 0.8), bx * rng.uniform(0.33, 0.38)
    lungs = np.zeros_like(body)
    for side in (-1, 1):
        lx = cx + side * bx * rng.uniform(0.42, 0.48)
        lungs |= _ellipse(yy, xx, cy + rng.uniform(-0.04, 0.02), lx, lung_ry, lung_rx, side * rng.uniform(0.05, 0.2))
    heart_c = (cy - by * 0.25, cx + bx * 0.12)
    heart = _ellipse(yy, xx, heart_c[0], heart_c[1], by * 0.38, bx * 0.3, 0.5)
    spine_c = (cy + by * 0.58, cx)
    mediastinum = _ellipse(yy, xx, cy, cx, by * 0.9, bx * 0.14)
    lungs &= inner & ~heart & ~mediastinum
    # Parenchyma is not flat: a soft, patchy texture of a few tens of HU.
    texture = gaussian_filter(rng.normal(0, 1, img.shape), sigma=size / 256 * 3) * 60.0
    img[lungs] = LUNG + texture[lungs]
    img[heart] = SOFT + 10.0

    vessel_map = np.zeros_like(img)
    for side in (-1, 1):
        half = lungs & (np.sign(xx - cx) == side)
        vessel_map += _vessels(rng, img, half, (cy - 0.02, cx + side * bx * 0.18), side)
    img += np.clip(vessel_map * 1.6, 0, 1) * (SOFT - LUNG) * 0.9

    # Great vessels and spine.
    img[_ellipse(yy, xx, cy - by * 0.1, cx - bx * 0.05, 0.07, 0.07)] = SOFT + 20.0  # ascending aorta
    img[_ellipse(yy, xx, spine_c[0] - 0.12, cx + bx * 0.12, 0.06, 0.06)] = SOFT + 20.0  # descending aorta
    vert = _ellipse(yy, xx, spine_c[0], spine_c[1], 0.11, 0.12)
    img[vert] = BONE
    img[_ellipse(yy, xx, spine_c[0], spine_c[1], 0.085, 0.095)] = MARROW
    img[_ellipse(yy, xx, spine_c[0] + 0.14, spine_c[1], 0.04, 0.04)] = 10.0  # canal
    img[_ellipse(yy, xx, spine_c[0] + 0.2, spine_c[1], 0.04, 0.02) & inner] = BONE  # spinous process
    img[_ellipse(yy, xx, cy - by + 0.07, cx, 0.035, 0.07)] = BONE  # sternum

    # Ribs: bright ovals just inside the outline, more at the sides and back.
    n_ribs = rng.integers(8, 13)
    for t in np.linspace(0.15, np.pi - 0.15, n_ribs // 2):
        for side in (-1, 1):
            ang = np.pi / 2 + side * (np.pi / 2 - t) + rng.normal(0, 0.05)
            ry, rx = by - 0.08, bx - 0.08
            py, px = cy + ry * np.sin(ang), cx + rx * np.cos(ang)
            img[_ellipse(yy, xx, py, px, 0.035, 0.022, ang)] = BONE * 0.8

    # Disease.
    if label == "nodule":
        for _ in range(rng.integers(1, 4)):
            _place_lesion(rng, img, yy, xx, lungs, rng.uniform(0.03, 0.06), lobes=1)
    elif label == "mass":
        _place_lesion(rng, img, yy, xx, lungs, rng.uniform(0.1, 0.16), lobes=rng.integers(3, 6))
    elif label == "effusion":
        for side in ([-1], [1], [-1, 1])[rng.integers(3)]:
            half = lungs & (np.sign(xx - cx) == side)
            level = cy + lung_ry * rng.uniform(0.1, 0.5)
            meniscus = level - 0.12 * np.abs(xx - (cx + side * bx * 0.45)) ** 2 * 4
            img[half & (yy > meniscus)] = FLUID

    # Partial-volume blur, then noise with a CT-like fine grain.
    img = gaussian_filter(img, sigma=size / 256 * 0.7)
    noise = gaussian_filter(rng.normal(0, 1, img.shape), sigma=scanner.grain) * scanner.noise
    return img + noise.astype(np.float32)


def _place_lesion(rng, img, yy, xx, lungs, radius, lobes):
    ys, xs = np.nonzero(lungs)
    if len(ys) == 0:
        return
    n = img.shape[0]
    k = rng.integers(len(ys))
    cy, cx = ys[k] / n * 2 - 1, xs[k] / n * 2 - 1
    mask = np.zeros_like(lungs)
    for _ in range(lobes):
        oy, ox = rng.normal(0, radius * 0.5, 2) if lobes > 1 else (0.0, 0.0)
        r = radius * rng.uniform(0.6, 1.0)
        mask |= _ellipse(yy, xx, cy + oy, cx + ox, r, r * rng.uniform(0.8, 1.2), rng.uniform(0, np.pi))
    img[mask & (lungs | (img > -500))] = SOFT - 5.0


def phantom(rng: np.random.Generator, label: str, size: int = 256, scanner: Scanner = Scanner()) -> np.ndarray:
    """One slice as uint8 in the lung window (what a lung-window PNG holds)."""
    centre, width = WINDOWS["lung"]
    hu = phantom_hu(rng, label, size, scanner)
    u = np.clip((hu - (centre - width / 2)) / width, 0.0, 1.0)
    return np.rint(u * 255).astype(np.uint8)


def save_palette_png(pixels: np.ndarray, path: Path) -> None:
    """Write uint8 gray as an 8-bit colormap PNG, the way the challenge ships images."""
    im = Image.frombytes("P", (pixels.shape[1], pixels.shape[0]), np.ascontiguousarray(pixels).tobytes())
    im.putpalette([v for i in range(256) for v in (i, i, i)])
    im.save(path)


def make_phantoms(
    out: str | Path,
    per_class: int = 60,
    size: int = 256,
    seed: int = 0,
    classes: tuple[str, ...] = CLASSES,
    progress=None,
) -> dict[str, int]:
    """Write ``out/{train,valid,test}/<class>/<class>_NNNN.png``; returns counts per split.

    Each image draws from its own generator seeded by ``(seed, class, index)``,
    so a dataset can be regenerated exactly and any subset is reproducible.
    """
    if per_class < 3:
        raise VitprintError(f"images per class must be at least 3 (one per split), got {per_class}")
    out = Path(out)
    counts = {s: 0 for s in SPLITS}
    # Every split gets at least one image per class.
    n_valid = max(1, round(per_class * SPLITS["valid"]))
    n_train = per_class - n_valid - max(1, round(per_class * SPLITS["test"]))
    for ci, label in enumerate(classes):
        for i in range(per_class):
            split = "train" if i < n_train else "valid" if i < n_train + n_valid else "test"
            folder = out / split / label
            folder.mkdir(parents=True, exist_ok=True)
            rng = np.random.default_rng([seed, ci, i])
            save_palette_png(phantom(rng, label, size), folder / f"{label}_{i:04d}.png")
            counts[split] += 1
            if progress is not None:
                progress.update(1)
    log.debug("wrote %d phantom images to %s", sum(counts.values()), out)
    return counts
