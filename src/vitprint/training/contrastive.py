"""Training the copy-detection embedding: SimCLR's NT-Xent on two copy-like views of each image."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from vitprint import distributed
from vitprint.data.copy_augment import CopyAugment
from vitprint.data.dataset import to_device
from vitprint.errors import VitprintError
from vitprint.models.copy_net import CopyNet
from vitprint.progress import bar

log = logging.getLogger(__name__)


@dataclass
class ContrastiveConfig:
    steps: int = 300
    batch_size: int = 64
    lr: float = 1e-3
    temperature: float = 0.1
    width: int = 32
    dim: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 2:
            raise VitprintError(f"need steps >= 1 and batch_size >= 2, got {self.steps}, {self.batch_size}")
        if self.temperature <= 0:
            raise VitprintError(f"temperature must be > 0, got {self.temperature}")


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's loss for unit-norm ``(B, D)`` views: each view must pick its partner among 2B-1."""
    z = torch.cat([a, b])
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))
    n = len(a)
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


def train_copy_net(pixels, cfg: ContrastiveConfig = ContrastiveConfig(), augment: CopyAugment = CopyAugment(),
                   device: torch.device | str = "cpu") -> tuple[CopyNet, list[float]]:
    """Train a CopyNet on uint8 ``(N, S, S)`` images; returns the model (eval mode) and the loss per step."""
    n = len(pixels)
    if n < 2:
        raise VitprintError(f"training the copy embedding needs at least 2 images, got {n}")
    device = torch.device(device)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model = CopyNet(cfg.width, cfg.dim).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    batch = min(cfg.batch_size, n)
    losses = []
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(n)
    pos = 0
    for _ in bar(range(cfg.steps), desc="copy embedding", unit="step"):
        if pos + batch > n:
            order, pos = rng.permutation(n), 0
        idx = np.sort(order[pos:pos + batch])
        pos += batch
        x = to_device(np.asarray(pixels[idx]), device)
        loss = nt_xent(model.project(augment(x, gen)), model.project(augment(x, gen)), cfg.temperature)
        if not math.isfinite(loss.item()):
            raise VitprintError(f"the copy embedding's loss became {loss.item()} at step {len(losses) + 1}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    log.info("copy embedding: loss %.3f -> %.3f over %d steps", losses[0], losses[-1], cfg.steps)
    return model.eval(), losses


EMBED_BATCH = 256  # images per embedding batch (the unit shared between processes)


@torch.no_grad()
def embed(model: CopyNet, pixels, batch_size: int | None = None) -> np.ndarray:
    """``(N, dim)`` float32 unit-norm embeddings of uint8 ``(N, S, S)`` images."""
    device = next(model.parameters()).device
    # Inside vitprint.distributed.sharded() the batches are shared over the processes.
    out = distributed.map_chunks(lambda s, e: model(to_device(np.asarray(pixels[s:e]), device)).cpu().numpy(),
                                 len(pixels), batch_size or EMBED_BATCH, enabled=False)
    return np.concatenate(out) if out else np.zeros((0, model.cfg["dim"]), np.float32)
