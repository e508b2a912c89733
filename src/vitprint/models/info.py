"""Size and cost of a model configuration: parameters and GFLOPs per image."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from vitprint.config import ModelConfig
from vitprint.models.autoencoder import Autoencoder


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _flops(fn) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def model_info(cfg: ModelConfig) -> dict[str, float]:
    """Parameters and GFLOP per image (forward; training = forward + backward)."""
    model = Autoencoder(cfg)
    x = torch.zeros(1, cfg.in_chans, cfg.image_size, cfg.image_size)
    with torch.no_grad():
        enc = _flops(lambda: model.encoder(x))
        total = _flops(lambda: model(x))

    def train_step():
        model(x).pow(2).mean().backward()

    train = _flops(train_step)
    return {
        "encoder_params": count_params(model.encoder),
        "decoder_params": count_params(model.decoder),
        "total_params": count_params(model),
        "encoder_gflop": enc / 1e9,
        "autoencoder_gflop": total / 1e9,
        "train_step_gflop": train / 1e9,
    }
