"""Configuration dataclasses, one per stage, validated on construction.

Every config can be written to and read from a plain dict (YAML/JSON), so the
full configuration travels with each checkpoint.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vitprint.errors import VitprintError

POOLINGS = ("cls", "mean")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def check_image_size(size: int, low: int = 32, high: int | None = None, what: str = "image_size") -> int:
    """``size`` if it is a power of two in ``[low, high]``; otherwise one clear error."""
    if not (isinstance(size, int) and size > 0 and size & (size - 1) == 0 and size >= low
            and (high is None or size <= high)):
        span = f"from {low} to {high}" if high else f">= {low}"
        raise VitprintError(f"{what} must be a power of two {span}, got {size}")
    return size


@dataclass
class ModelConfig:
    """The autoencoder's shape: a timm ViT encoder and a transposed-conv decoder.

    ``image_size`` is the size images are read at and reconstructed at;
    ``vit_img_size`` is what the ViT sees (the encoder resizes inside).
    """

    vit: str = "vit_base_patch16_224"
    vit_kwargs: dict[str, Any] = field(default_factory=dict)
    vit_img_size: int = 224
    image_size: int = 256
    latent_dim: int = 512
    pooling: str = "cls"
    in_chans: int = 1

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise VitprintError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        check_image_size(self.image_size, 32, 512)
        if self.latent_dim < 1:
            raise VitprintError(f"latent_dim must be positive, got {self.latent_dim}")
        if self.vit_img_size < 16:
            raise VitprintError(f"vit_img_size must be at least 16, got {self.vit_img_size}")
        if self.in_chans < 1:
            raise VitprintError(f"in_chans must be positive, got {self.in_chans}")


@dataclass
class OptimConfig:
    """Adam with a step schedule, the seed's defaults."""

    lr: float = 1e-4
    weight_decay: float = 0.0
    step_size: int = 10
    gamma: float = 1.0

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise VitprintError(f"lr must be positive, got {self.lr}")
        if self.weight_decay < 0:
            raise VitprintError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.step_size < 1:
            raise VitprintError(f"step_size must be >= 1, got {self.step_size}")
        if not 0 < self.gamma <= 1:
            raise VitprintError(f"gamma must be in (0, 1], got {self.gamma}")


@dataclass
class RunConfig:
    """What every training run shares: where, how long, how precise, how seeded."""

    out: str = "runs/run"
    epochs: int = 10
    batch_size: int = 64
    precision: str = "auto"
    seed: int = 0
    num_workers: int = 0
    resume: bool = False
    device: str = "auto"
    compile: bool = False

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise VitprintError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise VitprintError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.precision not in PRECISIONS:
            raise VitprintError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.num_workers < 0:
            raise VitprintError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.device not in ("auto", "cpu", "cuda", "mps"):
            raise VitprintError(f"device must be auto, cpu, cuda or mps, got {self.device!r}")


def to_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass (possibly nested) as plain JSON/YAML-ready values."""
    return dataclasses.asdict(cfg)


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Build ``cls`` from a dict, rejecting keys it does not know."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise VitprintError(f"unknown {cls.__name__} key(s): {', '.join(unknown)}")
    return cls(**data)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or a non-mapping is a clear error."""
    p = Path(path)
    if not p.is_file():
        raise VitprintError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise VitprintError(f"config file {p} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise VitprintError(f"config file {p} must hold a mapping of option: value")
    return data


DEFAULT_MAX_PIXELS = 150_000_000  # about 12,000 x 12,000


@dataclass
class DataConfig:
    """How images are read: CT window, decode cache, and strictness about bad files."""

    window: str | None = None
    cache_dir: str | None = None
    no_cache: bool = False
    strict: bool = False
    val_fraction: float = 0.1
    max_pixels: int = DEFAULT_MAX_PIXELS  # larger images are unreadable files (skipped, or an error when strict)

    def __post_init__(self) -> None:
        if not 0 < self.val_fraction < 1:
            raise VitprintError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.max_pixels < 1:
            raise VitprintError(f"max_pixels must be positive, got {self.max_pixels}", "max_pixels")
