"""Reading one file into grayscale images in [0, 1].

PNG/JPEG/BMP/TIFF through Pillow (palette images through their palette, 16-bit
and RGB(A) to grayscale), DICOM through pydicom and NIfTI volumes through
nibabel (one image per axial slice). A CT window maps Hounsfield units to
[0, 1] where the file carries them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from vitprint.config import DEFAULT_MAX_PIXELS
from vitprint.errors import VitprintError

RASTER_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
DICOM_SUFFIXES = {".dcm", ".dicom"}
NIFTI_SUFFIXES = {".nii", ".nii.gz"}

# Named CT windows as (centre, width) in Hounsfield units.
WINDOWS = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (40.0, 400.0),
    "bone": (400.0, 1800.0),
}


class UnreadableImage(Exception):
    """A file that exists but cannot be decoded (truncated, empty, not an image)."""


def suffix_of(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def is_image_file(path: Path) -> bool:
    s = suffix_of(path)
    return s in RASTER_SUFFIXES or s in DICOM_SUFFIXES or s in NIFTI_SUFFIXES


def parse_window(text: str | None) -> tuple[float, float] | None:
    """``None``, a name from WINDOWS, or ``"centre,width"``."""
    if text is None or text == "" or text == "none":
        return None
    if text in WINDOWS:
        return WINDOWS[text]
    try:
        centre, width = (float(v) for v in text.split(","))
    except ValueError:
        raise VitprintError(
            f"window must be one of {', '.join(WINDOWS)} or 'centre,width', got {text!r}"
        ) from None
    if width <= 0:
        raise VitprintError(f"window width must be positive, got {width}")
    return centre, width


@dataclass(frozen=True)
class ReadOptions:
    """How intensities become [0, 1] (a CT window, else the image's own range), the largest image
    accepted (``max_pixels``; a decompression bomb is refused before it is decoded) and, when known,
    the size the images are wanted at (``target``: a large raster is reduced while it is decoded)."""

    window: tuple[float, float] | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    target: int | None = None

    def for_size(self, size: int) -> "ReadOptions":
        return replace(self, target=size)


def _min_max(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float32)
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return np.zeros_like(a)
    return (a - lo) / (hi - lo)


def _apply_window(hu: np.ndarray, window: tuple[float, float] | None) -> np.ndarray:
    if window is None:
        return _min_max(hu)
    centre, width = window
    return np.clip((hu.astype(np.float32) - (centre - width / 2)) / width, 0.0, 1.0)


def _read_raster(path: Path, opts: ReadOptions = ReadOptions()) -> list[np.ndarray]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit below decides
            pillow_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # opening reads the header only
            try:
                im = Image.open(path)
            finally:
                Image.MAX_IMAGE_PIXELS = pillow_limit
        with im:
            w, h = im.size
            if w * h > opts.max_pixels:
                raise UnreadableImage(f"{w} x {h} pixels is more than the limit of {opts.max_pixels:,} "
                                      "(raise max_pixels to read it)")
            if opts.target and min(w, h) >= 4 * opts.target:
                # Decode at a fraction of the size where the format allows (JPEG), then reduce by box
                # averaging: a huge image never sits in memory as float32 at full size.
                im.draft(im.mode if im.mode in ("L", "RGB") else None, (2 * opts.target, 2 * opts.target))
                im.load()
                factor = min(im.size) // (2 * opts.target)
                if factor > 1 and im.mode in ("L", "LA", "RGB", "RGBA", "I", "F", "P"):
                    im = im.convert("L") if im.mode == "P" else im
                    im = im.reduce(factor)
            im.load()
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                # Wide images use their own range; dividing by 65535 would make
                # 12-bit CT stored in 16 bits nearly black.
                return [_min_max(np.asarray(im))]
            if mode in ("1", "L"):
                arr = np.asarray(im, dtype=np.uint8)
            elif mode == "LA":
                arr = np.asarray(im.getchannel("L"), dtype=np.uint8)
            else:
                # Palette ("8-bit colormap"), RGB, RGBA, CMYK...: through the
                # palette/colours to luminance, never the raw indices.
                arr = np.asarray(im.convert("L"), dtype=np.uint8)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
        raise UnreadableImage(str(exc) or type(exc).__name__) from None
    return [arr.astype(np.float32) / 255.0]


def _read_dicom(path: Path, opts: ReadOptions) -> list[np.ndarray]:
    try:
        import pydicom
    except ImportError:
        raise VitprintError("reading DICOM needs pydicom: pip install 'vitprint[dicom]'") from None
    try:
        ds = pydicom.dcmread(str(path))
        pixels = ds.pixel_array.astype(np.float32)
    except Exception as exc:  # pydicom raises many kinds for broken files
        raise UnreadableImage(str(exc) or type(exc).__name__) from None
    slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
    intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
    hu = pixels * slope + intercept
    frames = hu if hu.ndim == 3 else hu[None]
    return [_apply_window(f, opts.window) for f in frames]


def _read_nifti(path: Path, opts: ReadOptions) -> list[np.ndarray]:
    try:
        import nibabel as nib
    except ImportError:
        raise VitprintError("reading NIfTI needs nibabel: pip install 'vitprint[nifti]'") from None
    try:
        img = nib.as_closest_canonical(nib.load(str(path)))
        vol = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as exc:  # nibabel raises many kinds for broken files
        raise UnreadableImage(str(exc) or type(exc).__name__) from None
    if vol.ndim == 2:
        vol = vol[:, :, None]
    if vol.ndim != 3:
        raise UnreadableImage(f"expected a 2-D or 3-D volume, got shape {vol.shape}")
    # Canonical (RAS) orientation: the last axis is axial; rotate so anterior is up.
    return [_apply_window(np.rot90(vol[:, :, k]), opts.window) for k in range(vol.shape[2])]


def read_file(path: str | Path, opts: ReadOptions = ReadOptions()) -> list[np.ndarray]:
    """All 2-D images in one file, each ``(H, W)`` float32 in [0, 1].

    Raster files give one image, DICOM one per frame, NIfTI one per axial slice.
    Raises UnreadableImage for a file that cannot be decoded.
    """
    p = Path(path)
    if p.stat().st_size == 0:
        raise UnreadableImage("empty file")
    s = suffix_of(p)
    if s in DICOM_SUFFIXES:
        return _read_dicom(p, opts)
    if s in NIFTI_SUFFIXES:
        return _read_nifti(p, opts)
    return _read_raster(p, opts)


def resize_to_uint8(img: np.ndarray, size: int) -> np.ndarray:
    """``(H, W)`` float in [0, 1] -> ``(size, size)`` uint8, antialiased."""
    if img.shape != (size, size):
        img = np.asarray(
            Image.fromarray(np.ascontiguousarray(img, dtype=np.float32)).resize(
                (size, size), Image.BILINEAR
            )
        )
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
