"""Choosing the device: the one place that knows what 'auto' means and what is available."""

from __future__ import annotations

import os

import torch

from vitprint.errors import VitprintError


def pick_device(device: str = "auto") -> torch.device:
    """``auto`` is the first of cuda, mps, cpu; asking for one that is missing is a clear error. Under a
    launcher (torchrun, accelerate launch) each process takes the GPU of its local rank."""
    if device in ("auto", "cuda") and torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise VitprintError("device cuda was asked for, but no CUDA GPU is available", "device")
    if device == "mps" and not torch.backends.mps.is_available():
        raise VitprintError("device mps was asked for, but MPS is not available", "device")
    return torch.device(device)


def pick_precision(precision: str, device: torch.device) -> str:
    """``auto`` is bf16 on a CUDA GPU that supports it and fp32 elsewhere (on a CPU fp32 is the measured
    better default); any other value is kept."""
    if precision != "auto":
        return precision
    return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
