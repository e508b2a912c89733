"""Torch datasets over an ImageSet, and the step that turns their uint8 batches into model inputs on the device.

Items stay uint8 until they reach the device: a batch crosses to a GPU as a
quarter of the bytes (pinned memory, non-blocking), is scaled to [-1, 1]
there and, for pretraining, augmented there in one batched call (the seed's
augmentations, per image random, with kornia). No per-image Python runs on
the hot path.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from vitprint.data.imageset import ImageSet


def seed_augmentation() -> nn.Module:
    """The seed's augmentations (torchvision's RandomAffine with nearest resampling, ColorJitter of brightness
    and contrast with p=0.8, GaussianBlur 3x3), batched on any device: ``(B, 1, H, W)`` in [0, 1] -> the
    same, each image changed at random."""
    import kornia.augmentation as K

    return nn.Sequential(
        K.RandomAffine(degrees=10, translate=(0.05, 0.05), scale=(0.95, 1.05), shear=5, p=1.0, resample="nearest"),
        K.ColorJitter(brightness=0.2, contrast=0.2, p=0.8),  # multiplicative brightness, as torchvision's
        K.RandomGaussianBlur((3, 3), sigma=(0.1, 2.0), p=1.0),
    )


class SeedAugment(nn.Module):
    """The seed's pretraining augmentations on a batch in [-1, 1]: the above in [0, 1], then random erasing
    (p=0.5, 2-10% of the area) of a patch filled with standard normal noise (torchvision's value="random")."""

    def __init__(self):
        super().__init__()
        import kornia.augmentation as K

        self.transforms = seed_augmentation()
        self.erase = K.RandomErasing(scale=(0.02, 0.1), p=0.5, value=0.0)  # draws where to erase, on a mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.transforms((x + 1) / 2).clamp_(0, 1) * 2 - 1
        hole = self.erase(torch.ones_like(x)) < 0.5
        return torch.where(hole, torch.randn_like(x), x)


def to_model_range(u8: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 ``(..., H, W)`` -> float32 in [-1, 1] (mean 0.5, std 0.5 normalisation), on the input's device."""
    t = u8 if isinstance(u8, torch.Tensor) else torch.from_numpy(np.array(u8, dtype=np.float32))
    return t.float().div_(127.5).sub_(1.0)


def to_device(u8: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """uint8 ``(B, S, S)`` pixels -> ``(B, 1, S, S)`` float in [-1, 1] on ``device``; the copy is uint8
    (pinned and non-blocking to a GPU) and the scaling runs on the device."""
    device = torch.device(device)
    u8 = np.ascontiguousarray(u8)
    t = torch.from_numpy(u8 if u8.flags.writeable else u8.copy())  # a memory map is read-only: copy the batch
    if device.type == "cuda":
        t = t.pin_memory()
    return to_model_range(t.to(device, non_blocking=True))[:, None]


class ImageTensors(Dataset):
    """Item ``i``: ``(1, S, S)`` uint8, plus its label when the set has labels (``DeviceBatches`` scales them)."""

    def __init__(self, images: ImageSet):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        x = torch.from_numpy(np.array(self.images.pixels[i]))[None]  # a writable copy (a memory map is read-only)
        if self.images.labels is None:
            return x
        return x, int(self.images.labels[i])


class DeviceBatches:
    """A DataLoader of uint8 batches (``x`` or ``(x, y)``) seen as model inputs: each batch moved to ``device``
    (non-blocking; a no-op when Accelerate already placed it), scaled to [-1, 1] and, with ``augment``,
    augmented there."""

    def __init__(self, loader: Iterable, device: torch.device | str, augment: Callable | None = None):
        self.loader, self.device, self.augment = loader, torch.device(device), augment

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            x, rest = (batch[0], tuple(batch[1:])) if isinstance(batch, (tuple, list)) else (batch, None)
            x = to_model_range(x.to(self.device, non_blocking=True))
            if self.augment is not None:
                x = self.augment(x)
            yield x if rest is None else (x, *(r.to(self.device, non_blocking=True) for r in rest))
