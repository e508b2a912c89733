"""Named model sizes. A preset is a ModelConfig; any timm ViT name works too."""

from __future__ import annotations

import dataclasses

from vitprint.config import ModelConfig
from vitprint.errors import VitprintError

PRESETS: dict[str, ModelConfig] = {
    # The seed's configuration: ViT-B/16 at 224, 256 px images, 512-dim latent.
    "seed": ModelConfig(
        vit="vit_base_patch16_224", vit_img_size=224, image_size=256, latent_dim=512
    ),
    # Small enough that the demo and the tests are quick on two CPU cores:
    # a ViT-Ti width (192, 3 heads) at depth 6, 8-px patches on 64 px images.
    "tiny": ModelConfig(
        vit="vit_tiny_patch16_224",
        vit_kwargs={"depth": 6, "patch_size": 8},
        vit_img_size=64,
        image_size=64,
        latent_dim=128,
    ),
    # Smallest that still is a ViT: for unit tests of plumbing.
    "micro": ModelConfig(
        vit="vit_tiny_patch16_224",
        vit_kwargs={"depth": 2, "patch_size": 8, "embed_dim": 32, "num_heads": 2},
        vit_img_size=32,
        image_size=32,
        latent_dim=16,
    ),
}


def model_config(name: str, **overrides) -> ModelConfig:
    """The preset ``name`` (or, for any other name, a timm ViT by that name).

    Overrides with value ``None`` are ignored, so CLI options can pass through.
    """
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if name in PRESETS:
        base = PRESETS[name]
    else:
        import timm

        if not timm.is_model(name) or "vit" not in name:
            raise VitprintError(
                f"unknown preset or timm ViT {name!r}; presets: {', '.join(PRESETS)}"
            )
        base = ModelConfig(vit=name)
    return dataclasses.replace(base, **overrides)
