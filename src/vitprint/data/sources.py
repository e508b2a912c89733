"""From a DataConfig and folders to decoded ImageSets (the one entry point commands use)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vitprint.config import DataConfig
from vitprint.data.folders import list_images
from vitprint.data.imageset import ImageSet, default_cache_dir, load_images
from vitprint.data.readers import ReadOptions, parse_window


def read_options(data: DataConfig) -> ReadOptions:
    return ReadOptions(window=parse_window(data.window), max_pixels=data.max_pixels)


def cache_dir(data: DataConfig) -> Path | None:
    if data.no_cache:
        return None
    return Path(data.cache_dir) if data.cache_dir else default_cache_dir()


def read_files(files: list[Path], size: int, data: DataConfig, labels=None, what="images") -> ImageSet:
    return load_images(files, size, read_options(data), cache_dir(data), data.strict, labels, what)


def read_folders(folders: list[str | Path], size: int, data: DataConfig, what="images") -> ImageSet:
    """Every image below each folder, in order, as one set."""
    files = [f for folder in folders for f in list_images(folder)]
    return read_files(files, size, data, what=what)


def split(images: ImageSet, fraction: float, seed: int) -> tuple[ImageSet, ImageSet]:
    """A seeded (train, validation) split of one set; validation gets at least one image."""
    n = len(images)
    order = np.random.default_rng(seed).permutation(n)
    n_val = min(max(1, round(n * fraction)), n - 1) if n > 1 else 0
    val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
    return subset(images, train_idx), subset(images, val_idx)


def subset(images: ImageSet, idx) -> ImageSet:
    idx = np.asarray(idx, dtype=np.int64)
    return ImageSet(
        [images.ids[i] for i in idx],
        [images.paths[i] for i in idx],
        np.asarray(images.pixels[idx]),
        None if images.labels is None else images.labels[idx],
    )
