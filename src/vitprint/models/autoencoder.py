"""The two models built on the encoder: the autoencoder and the pretraining classifier."""

from __future__ import annotations

import torch
from torch import nn

from vitprint.config import ModelConfig
from vitprint.models.decoder import Decoder
from vitprint.models.encoder import ViTEncoder


class Autoencoder(nn.Module):
    """``(B, C, S, S) -> (B, C, S, S)``: ViT encoder, latent, transposed-conv decoder."""

    def __init__(self, cfg: ModelConfig, pretrained_hub: bool = False):
        super().__init__()
        self.cfg = cfg
        self.encoder = ViTEncoder(cfg, pretrained_hub=pretrained_hub)
        self.decoder = Decoder(cfg.latent_dim, cfg.image_size, out_chans=cfg.in_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class Classifier(nn.Module):
    """``(B, C, H, W) -> (B, num_classes)`` logits: the encoder plus a linear head.

    The head sits on the latent, so pretraining also trains the projection the
    autoencoder and the latent detector use.
    """

    def __init__(self, cfg: ModelConfig, num_classes: int, pretrained_hub: bool = False):
        super().__init__()
        self.cfg = cfg
        self.encoder = ViTEncoder(cfg, pretrained_hub=pretrained_hub)
        self.head = nn.Linear(cfg.latent_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))
