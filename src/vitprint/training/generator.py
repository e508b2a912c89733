"""Training a DCGAN on real images and sampling from it (the membership setting).

The loop is the standard non-saturating GAN loss with Adam (lr 2e-4, betas
0.5/0.999). It shares the run conventions of the other trainings: Accelerate,
per-epoch seeding, JSON-lines metrics, atomic checkpoints with ``--resume``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from accelerate.utils import set_seed
from torch import nn
from torch.utils.data import DataLoader

from vitprint.config import RunConfig, to_dict
from vitprint.data.dataset import ImageTensors
from vitprint.data.imageset import ImageSet
from vitprint.data.phantoms import save_palette_png
from vitprint.errors import VitprintError
from vitprint.models.dcgan import Discriminator, Generator
from vitprint.progress import bar
from vitprint.training.checkpoint import load_checkpoint, read_meta, save_checkpoint
from vitprint.training.engine import checkpoint_paths, make_accelerator, prepare_out

log = logging.getLogger(__name__)


class GAN(nn.Module):
    """Both networks in one module, so one checkpoint holds them."""

    def __init__(self, image_size: int, z_dim: int = 100, base: int = 32):
        super().__init__()
        self.generator = Generator(image_size, z_dim, base)
        self.discriminator = Discriminator(image_size, base)


def train_gan(images: ImageSet, run: RunConfig, z_dim: int = 100, base: int = 32, lr: float = 2e-4,
              sample_every: int = 0) -> dict[str, Any]:
    """Train a DCGAN on ``images`` (read at the size it should generate); returns a summary.

    Writes ``checkpoints/last.safetensors`` (the generator to sample from),
    ``metrics.jsonl`` and ``samples.png``.
    """
    out = prepare_out(run)
    last_path, _ = checkpoint_paths(out)
    size = images.size
    torch.manual_seed(run.seed)
    gan = GAN(size, z_dim, base)
    opt_g = torch.optim.Adam(gan.generator.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(gan.discriminator.parameters(), lr=lr, betas=(0.5, 0.999))
    start = 0
    if run.resume:
        meta = load_checkpoint(last_path, gan, {"generator": opt_g, "discriminator": opt_d})
        start = meta["epoch"] + 1
    acc = make_accelerator(run)
    loader = DataLoader(ImageTensors(images), batch_size=run.batch_size, shuffle=True,
                        drop_last=len(images) > run.batch_size, num_workers=run.num_workers)
    gan, opt_g, opt_d, loader = acc.prepare(gan, opt_g, opt_d, loader)
    raw = acc.unwrap_model(gan)
    meta = {"kind": "gan", "image_size": size, "z_dim": z_dim, "base": base, "lr": lr, "run": to_dict(run),
            "train_images": len(images)}
    log.info("training a %d px DCGAN on %d images for %d epochs on %s", size, len(images), run.epochs, acc.device)
    epochs = bar(range(start, run.epochs), desc="GAN epochs", unit="epoch", initial=start, total=run.epochs)
    for epoch in epochs:
        set_seed(run.seed + epoch)
        gan.train()
        t0, seen, sum_d, sum_g = time.perf_counter(), 0, 0.0, 0.0
        for x in loader:
            b = x.shape[0]
            z = torch.randn(b, z_dim, device=x.device)
            with acc.autocast():
                fake = raw.generator(z)
                d_real, d_fake = raw.discriminator(x), raw.discriminator(fake.detach())
                loss_d = F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real)) + \
                    F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
            opt_d.zero_grad(set_to_none=True)
            acc.backward(loss_d)
            opt_d.step()
            with acc.autocast():
                d_gen = raw.discriminator(fake)
                loss_g = F.binary_cross_entropy_with_logits(d_gen, torch.ones_like(d_gen))
            opt_g.zero_grad(set_to_none=True)
            acc.backward(loss_g)
            opt_g.step()
            if not (torch.isfinite(loss_d) and torch.isfinite(loss_g)):
                raise VitprintError(f"GAN losses became non-finite in epoch {epoch + 1}; the last good checkpoint is {last_path}")
            seen += b
            sum_d += loss_d.item() * b
            sum_g += loss_g.item() * b
        record = {"epoch": epoch + 1, "loss_d": sum_d / seen, "loss_g": sum_g / seen,
                  "images_per_s": seen / (time.perf_counter() - t0)}
        epochs.set_postfix(loss_d=f"{record['loss_d']:.3f}", loss_g=f"{record['loss_g']:.3f}")
        if acc.is_main_process:
            with (out / "metrics.jsonl").open("a") as f:
                f.write(json.dumps(record) + "\n")
            save_checkpoint(last_path, raw, {"generator": opt_g, "discriminator": opt_d}, {**meta, "epoch": epoch})
    gen = raw.generator.eval()
    with torch.no_grad():
        grid = gen(torch.randn(16, z_dim, generator=torch.Generator().manual_seed(0)).to(acc.device)).cpu()
    from vitprint.evaluation.plots import image_pairs

    image_pairs(grid[:8, 0].numpy(), grid[8:, 0].numpy(), out / "samples.png", titles=("samples", "samples"))
    return {"checkpoint": str(last_path), "epochs": run.epochs}


def load_generator(path: str | Path, device="cpu") -> Generator:
    """The generator of a GAN checkpoint, in eval mode."""
    if not Path(path).is_file():
        raise VitprintError(f"checkpoint not found: {path}")
    meta = read_meta(path)
    if meta.get("kind") != "gan":
        raise VitprintError(f"{path} is not a GAN checkpoint (it holds {meta.get('kind', 'unknown')!r})")
    gan = GAN(meta["image_size"], meta["z_dim"], meta["base"])
    load_checkpoint(path, gan)
    return gan.generator.to(device).eval()


@torch.no_grad()
def generate(path: str | Path, n: int, out: str | Path, seed: int = 0, batch_size: int = 256,
             size: int | None = None, prefix: str = "generated") -> list[Path]:
    """Write ``n`` samples as palette PNGs ``out/<prefix>_NNNNN.png`` (optionally resized)."""
    if n < 1:
        raise VitprintError(f"the number of images must be >= 1, got {n}")
    gen = load_generator(path)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    files = []
    for start in bar(range(0, n, batch_size), desc="generating", unit="batch"):
        z = torch.randn(min(batch_size, n - start), gen.z_dim, generator=g)
        x = gen(z)
        if size and size != x.shape[-1]:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        u8 = ((x[:, 0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
        for j, img in enumerate(u8):
            f = out / f"{prefix}_{start + j:05d}.png"
            save_palette_png(np.ascontiguousarray(img), f)
            files.append(f)
    return files
