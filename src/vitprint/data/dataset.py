"""Torch datasets over an ImageSet, with the seed's pretraining augmentations."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from vitprint.data.imageset import ImageSet


def seed_augmentation() -> v2.Transform:
    """The seed's augmentations on a ``(1, H, W)`` tensor in [0, 1] (before scaling)."""
    return v2.Compose(
        [
            v2.RandomAffine(degrees=10, translate=(0.05, 0.05), scale=(0.95, 1.05), shear=5),
            v2.RandomApply([v2.ColorJitter(brightness=0.2, contrast=0.2)], p=0.8),
            v2.GaussianBlur(kernel_size=3, sigma=(0.1, 2.0)),
        ]
    )


def to_model_range(u8: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 ``(..., H, W)`` -> float32 in [-1, 1] (mean 0.5, std 0.5 normalisation)."""
    t = u8 if isinstance(u8, torch.Tensor) else torch.from_numpy(np.array(u8, dtype=np.float32))
    return t.float().div_(127.5).sub_(1.0)


class ImageTensors(Dataset):
    """Item ``i``: ``(1, S, S)`` float in [-1, 1], plus its label when the set has labels.

    ``augment`` transforms work in [0, 1]; random erasing (the seed's p=0.5,
    area 2-10%) is applied after scaling so the erased patch is mid-gray noise.
    """

    def __init__(self, images: ImageSet, augment: bool = False):
        self.images = images
        self.augment = seed_augmentation() if augment else None
        self.erase = v2.RandomErasing(p=0.5, scale=(0.02, 0.1), value="random") if augment else None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        x = to_model_range(self.images.pixels[i])[None]
        if self.augment is not None:
            # The seed's augmentations work on [0, 1] intensities.
            x = self.augment((x + 1) / 2).clamp_(0, 1) * 2 - 1
        if self.erase is not None:
            x = self.erase(x)
        if self.images.labels is None:
            return x
        return x, int(self.images.labels[i])
