"""The ViT encoder: grayscale in, token features and a compact latent out."""

from __future__ import annotations

import timm
import torch
import torch.nn.functional as F
from torch import nn

from vitprint.config import ModelConfig


class ViTEncoder(nn.Module):
    """A timm ViT with a 1x1 channel adapter in front and a latent projection behind.

    ``(B, C, H, W) -> (B, latent_dim)``, where ``C`` is ``cfg.in_chans`` (1 for
    grayscale). Images of any size are resized to the ViT's input size here, so
    the caller never needs to know it.
    """

    def __init__(self, cfg: ModelConfig, pretrained_hub: bool = False):
        super().__init__()
        self.cfg = cfg
        # The adapter learns how to spread one channel over the three a ViT
        # (and any RGB-pretrained weights) expects.
        self.channel_adapter = nn.Conv2d(cfg.in_chans, 3, kernel_size=1)
        self.vit = timm.create_model(
            cfg.vit,
            pretrained=pretrained_hub,
            num_classes=0,
            img_size=cfg.vit_img_size,
            global_pool="token" if cfg.pooling == "cls" else "avg",
            **cfg.vit_kwargs,
        )
        self.embed_dim = self.vit.embed_dim
        self.proj = nn.Linear(self.embed_dim, cfg.latent_dim)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        size = self.cfg.vit_img_size
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        return self.channel_adapter(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, T, D)``: all tokens (prefix tokens first), normed."""
        return self.vit.forward_features(self._prepare(x))

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, T, D) -> (B, D)``: the class token or the mean patch token."""
        return self.vit.forward_head(tokens, pre_logits=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, latent_dim)``."""
        return self.proj(self.pool(self.forward_features(x)))
