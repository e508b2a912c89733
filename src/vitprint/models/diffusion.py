"""A small denoising diffusion model for the membership setting (DDPM, Ho et al. 2020).

The network is ``diffusers``' ``UNet2DModel`` (grayscale, three resolution
levels, no attention: it trains on a CPU), the noise schedule its
``DDPMScheduler`` (1,000 linear steps), and sampling its ``DDIMScheduler``
in a few deterministic steps (Song et al. 2021; eta = 0), so that a starting
noise image fixes the sample, as a GAN's latent does. Diffusion models copy
their training images far more readily than GANs when trained long on few
images (Carlini et al. 2023), which is what the benchmark needs to show.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from torch import nn

from vitprint.config import check_image_size

TRAIN_STEPS = 1000


def _unet(image_size: int, base: int) -> UNet2DModel:
    return UNet2DModel(sample_size=image_size, in_channels=1, out_channels=1, layers_per_block=1,
                       block_out_channels=(base, 2 * base, 2 * base),
                       down_block_types=("DownBlock2D",) * 3, up_block_types=("UpBlock2D",) * 3,
                       add_attention=False, norm_num_groups=8)


class Diffusion(nn.Module):
    """The denoiser of a DDPM; ``forward(x)`` is the training loss of a batch of images in [-1, 1] (the
    mean squared error of the noise it predicts at a random step)."""

    def __init__(self, image_size: int = 64, base: int = 32, sample_steps: int = 25):
        super().__init__()
        check_image_size(image_size, 32)
        self.image_size, self.sample_steps = image_size, sample_steps
        self.unet = _unet(image_size, base)
        self.schedule = DDPMScheduler(num_train_timesteps=TRAIN_STEPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = torch.randn_like(x)
        t = torch.randint(0, TRAIN_STEPS, (x.shape[0],), device=x.device)
        noisy = self.schedule.add_noise(x, noise, t)
        return F.mse_loss(self.unet(noisy, t).sample.float(), noise.float())


class DiffusionSampler(nn.Module):
    """``(B, S*S)`` noise -> ``(B, 1, S, S)`` images in [-1, 1] by DDIM: the generator's shape."""

    def __init__(self, model: Diffusion):
        super().__init__()
        self.unet, self.steps, self.size = model.unet, model.sample_steps, model.image_size
        self.z_dim = self.size * self.size

    @torch.no_grad()
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = z.reshape(-1, 1, self.size, self.size)
        ddim = DDIMScheduler(num_train_timesteps=TRAIN_STEPS)
        ddim.set_timesteps(self.steps)
        for t in ddim.timesteps:
            x = ddim.step(self.unet(x, t).sample, t, x, eta=0.0).prev_sample
        return x.clamp(-1, 1)
