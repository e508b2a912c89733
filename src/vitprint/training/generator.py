"""Training a generator on real images and sampling from it (the membership setting).

Four families: ``dcgan`` (non-saturating GAN loss, Adam 2e-4, betas 0.5/0.999,
one-sided label smoothing and differentiable translation before the
discriminator, so it trains on a few hundred images without collapsing),
``pacgan`` (the same DCGAN whose discriminator judges packs of four images at
once, PacGAN, Lin et al. 2018, with neither translation nor smoothing: packing
works against collapsing onto one image, so on a small training set trained
long it can learn the set itself, image by image; not on every seed, and
packing does not rule a collapse out),
``vae`` (a convolutional VAE of the same shape: MSE reconstruction + KL,
Adam 1e-3 by default) and ``ddpm`` (a small diffusers UNet trained to predict
the noise, Adam 5e-4, sampled with 25 DDIM steps). All share the run conventions of the other trainings:
Accelerate, per-epoch seeding, JSON-lines metrics, atomic checkpoints with
``--resume``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from vitprint.config import RunConfig, to_dict
from vitprint.data.dataset import DeviceBatches, ImageTensors
from vitprint.data.imageset import ImageSet
from vitprint.data.phantoms import save_palette_png
from vitprint.errors import VitprintError
from vitprint.models.dcgan import VAE, Discriminator, Generator
from vitprint.progress import bar
from vitprint.training.checkpoint import load_checkpoint, read_meta, save_checkpoint
from vitprint.training.engine import append_record, checkpoint_paths, make_accelerator, prepare_out, train_one_epoch

log = logging.getLogger(__name__)

FAMILIES = ("dcgan", "pacgan", "vae", "ddpm")
DEFAULT_LR = {"dcgan": 2e-4, "pacgan": 2e-4, "vae": 1e-3, "ddpm": 5e-4}
DEFAULT_WIDTH = {"dcgan": 32, "pacgan": 32, "vae": 32, "ddpm": 16}  # the UNet at 16 trains at ~0.45 s per 32 images at 64 px on 2 cores
GANS = ("dcgan", "pacgan")
PACK = 4  # images per pack of the pacgan family's discriminator


class GAN(nn.Module):
    """Both networks in one module, so one checkpoint holds them; the discriminator judges ``pack`` images
    at once (1: the plain DCGAN)."""

    def __init__(self, image_size: int, z_dim: int = 100, base: int = 32, pack: int = 1):
        super().__init__()
        self.pack = pack
        self.generator = Generator(image_size, z_dim, base)
        self.discriminator = Discriminator(image_size, base, in_channels=pack)


def build(family: str, image_size: int, z_dim: int, base: int, pack: int | None = None) -> nn.Module:
    """A family's networks; ``pack``: the GAN discriminator's images per judgement (default: the family's,
    ``PACK`` for pacgan and 1 for dcgan; a checkpoint gives the one it was trained with)."""
    if family in GANS:
        return GAN(image_size, z_dim, base, pack=pack or (PACK if family == "pacgan" else 1))
    if family == "vae":
        return VAE(image_size, z_dim, base)
    if family == "ddpm":
        from vitprint.models.diffusion import Diffusion  # diffusers loads only for this family

        return Diffusion(image_size, base)
    raise VitprintError(f"generator family must be one of {', '.join(FAMILIES)}, got {family!r}")


def sampler(model: nn.Module) -> nn.Module:
    """The network that maps noise ``(B, z_dim)`` to images ``(B, 1, S, S)``."""
    if isinstance(model, GAN):
        return model.generator
    if isinstance(model, VAE):
        return model.decoder
    from vitprint.models.diffusion import DiffusionSampler

    return DiffusionSampler(model)


def diff_translate(x: torch.Tensor, fraction: float = 0.125) -> torch.Tensor:
    """Shift each image by a random offset of up to ``fraction`` of its size, differentiably.

    Applied to real and generated images alike before the discriminator
    (differentiable augmentation, Zhao et al. 2020), it stops the discriminator
    from memorising a small training set, which otherwise collapses the generator.
    """
    shift = (torch.rand(x.shape[0], 2, device=x.device) * 2 - 1) * 2 * fraction
    theta = torch.zeros(x.shape[0], 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="border", align_corners=False)


def _gan_step(opts, acc, nets: tuple[nn.Module, nn.Module], raw: GAN):
    """A step that updates the discriminator, then the generator, each back-propagated outside autocast.

    ``nets`` are the generator and the discriminator as Accelerate prepared them (with several processes,
    each wrapped for data-parallel training, so that every process's gradients are averaged and the
    replicas stay equal); ``raw`` the GAN that holds them, for its settings.

    With packing (``raw.pack`` > 1), the batch's real images are drawn ``pack`` times, each draw in a
    fresh random order and cut into packs of ``pack`` distinct images (a batch of B makes B // pack packs
    a draw, so each image sits in up to ``pack`` packs, with other partners each time), against as many
    generated images; neither translation nor smoothing is applied.
    """
    opt_g, opt_d = opts["generator"], opts["discriminator"]
    generator, discriminator = nets
    pack, z_dim = raw.pack, raw.generator.z_dim

    def step(model: GAN, x) -> tuple[dict[str, torch.Tensor], int]:
        n = x.shape[0]
        if pack > 1:  # each draw cut by itself, so no pack holds an image twice
            whole = len(x) - len(x) % pack
            x = x[torch.cat([torch.randperm(len(x), device=x.device)[:whole] for _ in range(pack)])]
        see = diff_translate if pack == 1 else (lambda images: images)

        def judge(images):
            return discriminator(see(images).reshape(-1, pack, *images.shape[2:]))

        z = torch.randn(x.shape[0], z_dim, device=x.device)
        with acc.autocast():
            fake = generator(z)
            d_real, d_fake = judge(x), judge(fake.detach())
            # One-sided label smoothing keeps the plain discriminator from winning outright
            # on small training sets, which otherwise collapses the generator to one mode.
            real_label = 0.9 if pack == 1 else 1.0
            loss_d = F.binary_cross_entropy_with_logits(d_real, torch.full_like(d_real, real_label)) + \
                F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
        opt_d.zero_grad(set_to_none=True)
        acc.backward(loss_d)
        opt_d.step()
        # The generator's loss back-propagates through the discriminator to the images only: its own
        # weights need no gradient there (they are cleared before its next update), and with several
        # processes none is averaged over them.
        trainable = [p.requires_grad for p in discriminator.parameters()]
        discriminator.requires_grad_(False)
        try:
            with acc.no_sync(discriminator):
                with acc.autocast():
                    d_gen = judge(fake)
                    loss_g = F.binary_cross_entropy_with_logits(d_gen, torch.ones_like(d_gen))
                opt_g.zero_grad(set_to_none=True)
                acc.backward(loss_g)
        finally:
            for p, was in zip(discriminator.parameters(), trainable):
                p.requires_grad_(was)
        opt_g.step()
        return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach()}, n

    return step


def _vae_step(beta: float = 1.0):
    """The negative ELBO as ``"loss"`` (the loop optimises it), with its two parts for the log."""

    def step(model: VAE, x) -> tuple[dict[str, torch.Tensor], int]:
        rec, mu, logvar = model(x)
        # Per-image sums, averaged over the batch: the usual ELBO scaling.
        recon = F.mse_loss(rec.float(), x, reduction="sum") / x.shape[0]
        kl = -0.5 * torch.sum(1 + logvar.float() - mu.float().pow(2) - logvar.float().exp()) / x.shape[0]
        return {"loss": recon + beta * kl, "recon": recon.detach(), "kl": kl.detach()}, x.shape[0]

    return step


def _ddpm_step():
    def step(model, x) -> tuple[dict[str, torch.Tensor], int]:
        return {"loss": model(x)}, x.shape[0]

    return step


def train_generator(images: ImageSet, run: RunConfig, family: str = "dcgan", z_dim: int = 100, base: int | None = None,
                    lr: float | None = None) -> dict[str, Any]:
    """Train a generator on ``images`` (read at the size it should generate); returns a summary.

    Writes ``checkpoints/last.safetensors`` (what ``generate`` samples from),
    ``metrics.jsonl`` and ``samples.png``.
    """
    out = prepare_out(run)
    last_path, _ = checkpoint_paths(out)
    lr = lr or DEFAULT_LR.get(family, 2e-4)
    base = DEFAULT_WIDTH.get(family, 32) if base is None else base
    torch.manual_seed(run.seed)
    pack = None
    if run.resume and last_path.is_file():
        stored = read_meta(last_path)
        if stored.get("family", family) != family:
            raise VitprintError(f"{last_path} holds a {stored['family']} generator, not a {family}: resume it as "
                                f"{stored['family']}, or train the {family} in another output folder",
                                ("family", "resume", "out"))
        # A resumed GAN keeps the pack size it was trained with (a later change of PACK must not break it).
        pack = stored.get("pack") if family in GANS else None
    model = build(family, images.size, z_dim, base, pack)
    if family in GANS and model.pack > 1 and min(len(images), run.batch_size) < model.pack:
        raise VitprintError(f"{family} judges packs of {model.pack} different images: it needs at least {model.pack} "
                            f"training images and a batch size of at least {model.pack}", "batch_size")
    if family in GANS:
        opts = {"generator": torch.optim.Adam(model.generator.parameters(), lr=lr, betas=(0.5, 0.999)),
                "discriminator": torch.optim.Adam(model.discriminator.parameters(), lr=lr, betas=(0.5, 0.999))}
    else:
        opts = {family: torch.optim.Adam(model.parameters(), lr=lr)}
    start = 0
    if run.resume:
        start = load_checkpoint(last_path, model, opts)["epoch"] + 1
    # The discriminator runs on the real and the generated images before one backward: BatchNorm statistics
    # stay each process's own (the main process's are the ones saved).
    acc = make_accelerator(run, broadcast_buffers=family not in GANS)
    loader = DataLoader(ImageTensors(images), batch_size=run.batch_size, shuffle=True,
                        drop_last=len(images) > run.batch_size, num_workers=run.num_workers,
                        pin_memory=acc.device.type == "cuda")
    # A GAN's two networks are prepared apart: each player's update goes through its own data-parallel
    # wrapper (with several processes), which averages its gradients over the processes.
    nets = (model.generator, model.discriminator) if family in GANS else (model,)
    prepared = acc.prepare(*nets, *opts.values(), loader)
    nets, loader = prepared[:len(nets)], DeviceBatches(prepared[-1], acc.device)
    opts = dict(zip(opts, prepared[len(nets):-1]))
    raw = model.to(acc.device)  # the unwrapped module, which holds the very parameters that train
    if family not in GANS:
        model = nets[0]
    step, optimizer = ((_gan_step(opts, acc, nets, raw), None) if family in GANS else
                       (_vae_step(), opts["vae"]) if family == "vae" else (_ddpm_step(), opts["ddpm"]))
    meta = {"kind": "generator", "family": family, "image_size": images.size, "z_dim": z_dim, "base": base,
            "lr": lr, "run": to_dict(run), "train_images": len(images)}
    if family in GANS:
        meta["pack"] = raw.pack  # a later change of PACK still loads this checkpoint
    log.info("training a %d px %s on %d images for %d epochs on %s", images.size, family, len(images), run.epochs,
             acc.device)
    epochs = bar(range(start, run.epochs), desc=f"{family} epochs", unit="epoch", initial=start, total=run.epochs)
    for epoch in epochs:
        losses = train_one_epoch(model, loader, step, acc, epoch, run, optimizer, last_path, show_batches=False)
        record = {"epoch": epoch + 1, **losses}
        epochs.set_postfix({k: f"{v:.3f}" for k, v in record.items() if k not in ("epoch", "images_per_s")})
        if acc.is_main_process:
            append_record(out, record)
            save_checkpoint(last_path, raw, opts, {**meta, "epoch": epoch})
    acc.wait_for_everyone()
    if acc.is_main_process:  # with several processes, the main one writes the run's files
        gen = sampler(raw).eval()
        with torch.no_grad():
            grid = gen(torch.randn(16, gen.z_dim, generator=torch.Generator().manual_seed(0)).to(acc.device)).cpu()
        from vitprint.evaluation.plots import image_pairs

        image_pairs(grid[:8, 0].numpy(), grid[8:, 0].numpy(), out / "samples.png", titles=("samples", "samples"))
    return {"checkpoint": str(last_path), "epochs": run.epochs, "family": family}


def load_generator(path: str | Path, device="cpu") -> Generator:
    """The noise-to-image network of a generator checkpoint, in eval mode."""
    if not Path(path).is_file():
        raise VitprintError(f"checkpoint not found: {path}")
    meta = read_meta(path)
    if meta.get("kind") != "generator":
        raise VitprintError(f"{path} is not a generator checkpoint (it holds {meta.get('kind', 'unknown')!r})")
    model = build(meta["family"], meta["image_size"], meta["z_dim"], meta["base"], meta.get("pack"))
    load_checkpoint(path, model)
    return sampler(model).to(device).eval()


@torch.no_grad()
def sample(gen: Generator, n: int, seed: int = 0, batch_size: int = 256, size: int | None = None):
    """Yield uint8 ``(b, S, S)`` batches of ``n`` samples in total."""
    g = torch.Generator().manual_seed(seed)
    device = next(gen.parameters()).device
    for start in range(0, n, batch_size):
        z = torch.randn(min(batch_size, n - start), gen.z_dim, generator=g).to(device)
        x = gen(z)
        if size and size != x.shape[-1]:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        yield ((x[:, 0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()


def generate(path: str | Path, n: int, out: str | Path, seed: int = 0, batch_size: int = 256,
             size: int | None = None, prefix: str = "generated") -> list[Path]:
    """Write ``n`` samples as palette PNGs ``out/<prefix>_NNNNN.png`` (optionally resized)."""
    if n < 1:
        raise VitprintError(f"the number of images must be >= 1, got {n}")
    gen = load_generator(path)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for u8 in bar(sample(gen, n, seed, batch_size, size), total=-(-n // batch_size), desc="generating", unit="batch"):
        for img in u8:
            f = out / f"{prefix}_{len(files):05d}.png"
            save_palette_png(np.ascontiguousarray(img), f)
            files.append(f)
    return files
