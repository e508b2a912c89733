"""Size and cost of a model configuration: parameters and GFLOPs per image."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from vitprint.config import ModelConfig
from vitprint.models.autoencoder import Autoencoder


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _cpu_attention(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_attention_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


_CPU_ATTENTION = (("_scaled_dot_product_flash_attention_for_cpu", _cpu_attention),
                  ("_scaled_dot_product_flash_attention_for_cpu_backward", _cpu_attention_backward))


def flop_counter() -> FlopCounterMode:
    """PyTorch's FLOP counter, also counting the CPU's fused attention kernel (PyTorch counts its GPU
    attention kernels, but the CPU one, forward and backward, as 0 FLOPs)."""
    aten = torch.ops.aten
    return FlopCounterMode(display=False, custom_mapping={getattr(aten, name): fn for name, fn in _CPU_ATTENTION
                                                          if hasattr(aten, name)})


def _flops(fn) -> int:
    counter = flop_counter()
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
