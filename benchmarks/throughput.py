"""Training and inference throughput of vitprint's presets next to a seed-style implementation.

Side by side in one run, on the same machine and data:

* **vitprint**: timm ViT (fused attention) + decoder, images decoded once into
  the uint8 cache, fp32 and bf16 autocast.
* **seed-style**: the same network written the way the seed's notebook does it:
  torchvision ``vit_b_16`` (or a torchvision ViT of the tiny preset's shape),
  interpolation to the ViT size, fp32, a plain loop, every batch decoded from PNG.

Also measures the machine's matmul peak (fp32, bf16) and reports achieved
GFLOP/s as a fraction of it. Usage::

    python benchmarks/throughput.py --presets seed tiny --out docs/throughput.json
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision.models.vision_transformer import VisionTransformer

from vitprint.data.dataset import to_model_range
from vitprint.data.folders import list_images
from vitprint.data.imageset import load_images
from vitprint.data.phantoms import make_phantoms
from vitprint.models.autoencoder import Autoencoder
from vitprint.models.decoder import Decoder
from vitprint.models.info import model_info
from vitprint.models.presets import model_config


def matmul_peak(dtype: torch.dtype, device: torch.device, n: int = 2048, reps: int = 10) -> float:
    """Best GFLOP/s of an n x n matmul over ``reps`` runs."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = 0.0
    for _ in range(reps + 2):
        _sync(device)
        t = time.perf_counter()
        a @ b
        _sync(device)
        best = max(best, 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


class SeedStyleEncoder(nn.Module):
    """The seed's way: torchvision ViT, interpolate to its size, 1x1 conv to 3 channels."""

    def __init__(self, cfg, vit: nn.Module):
        super().__init__()
        self.size = cfg.vit_img_size
        self.adapter = nn.Conv2d(1, 3, 1)
        self.vit = vit
        self.vit.heads = nn.Identity()
        self.proj = nn.Linear(vit.hidden_dim, cfg.latent_dim)

    def forward(self, x):
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return self.proj(self.vit(self.adapter(x)))


def seed_style_model(cfg) -> nn.Module:
    if cfg.vit == "vit_base_patch16_224" and not cfg.vit_kwargs:
        from torchvision.models import vit_b_16

        vit = vit_b_16(weights=None)
    else:  # the tiny preset's shape as a torchvision ViT
        kw = cfg.vit_kwargs
        dim = kw.get("embed_dim", 192)
        vit = VisionTransformer(image_size=cfg.vit_img_size, patch_size=kw.get("patch_size", 16),
                                num_layers=kw.get("depth", 12), num_heads=kw.get("num_heads", 3),
                                hidden_dim=dim, mlp_dim=4 * dim)
    return nn.Sequential(SeedStyleEncoder(cfg, vit), Decoder(cfg.latent_dim, cfg.image_size))


def decode_batch(files: list[Path], size: int) -> torch.Tensor:
    """What the seed's loader does every epoch: open, convert, resize, normalise."""
    arrs = [np.asarray(Image.open(f).convert("L").resize((size, size), Image.BILINEAR), np.float32) for f in files]
    return torch.from_numpy(np.stack(arrs))[:, None] / 127.5 - 1.0


def time_loop(step, n_batches: int, batch: int, device) -> float:
    """Images/s over ``n_batches`` after one warm-up batch."""
    step(0)
    _sync(device)
    t = time.perf_counter()
    for i in range(1, n_batches + 1):
        step(i)
    _sync(device)
    return n_batches * batch / (time.perf_counter() - t)


def bench_preset(name: str, files: list[Path], batch: int, steps: int, device: torch.device) -> list[dict]:
    cfg = model_config(name)
    info = model_info(cfg)
    cached = load_images(files, cfg.image_size, cache_dir=Path(tempfile.mkdtemp()), show_progress=False)
    n = len(cached)

    def batch_idx(i):
        return [(i * batch + k) % n for k in range(batch)]

    rows = []

    def run(label, model, get_x, precision, train):
        model = model.to(device).train(train)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        dtype = torch.bfloat16 if precision == "bf16" else None

        def step(i):
            x = get_x(i).to(device)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                if train:
                    loss = F.mse_loss(model(x).float(), x)
                    loss.backward()
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                else:
                    with torch.no_grad():
                        model(x)

        ips = time_loop(step, steps, batch, device)
        gflop = info["train_step_gflop"] if train else info["autoencoder_gflop"]
        rows.append({"preset": name, "implementation": label, "mode": "train" if train else "inference",
                     "precision": precision, "images_per_s": ips, "gflop_per_image": gflop,
                     "achieved_gflop_s": ips * gflop})
        print(f"{name:5s} {label:11s} {'train' if train else 'infer':5s} {precision}: {ips:8.2f} img/s", flush=True)

    ours_x = lambda i: to_model_range(cached.pixels[batch_idx(i)])[:, None]  # noqa: E731
    seed_x = lambda i: decode_batch([files[k] for k in batch_idx(i)], cfg.image_size)  # noqa: E731
    for train in (True, False):
        torch.manual_seed(0)
        run("seed-style", seed_style_model(cfg), seed_x, "fp32", train)
        for precision in ("fp32", "bf16"):
            torch.manual_seed(0)
            run("vitprint", Autoencoder(cfg), ours_x, precision, train)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["seed", "tiny"])
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3, help="timed batches per measurement (after one warm-up)")
    ap.add_argument("--tiny-steps", type=int, default=20, help="timed batches for the tiny preset")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--out", default="throughput.json")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    peak = {"fp32": matmul_peak(torch.float32, device), "bf16": matmul_peak(torch.bfloat16, device)}
    print(f"device {device}, matmul peak fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.0f} GFLOP/s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        make_phantoms(tmp, per_class=16, size=256, seed=0)
        files = list_images(tmp)
        rows = []
        for name in a.presets:
            steps = a.tiny_steps if name == "tiny" else a.steps
            rows += bench_preset(name, files, a.batch_size, steps, device)
    for r in rows:
        r["fraction_of_peak"] = r["achieved_gflop_s"] / peak[r["precision"]]
    machine = torch.cuda.get_device_name() if device.type == "cuda" else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    result = {"device": str(device), "machine": machine, "torch": torch.__version__, "matmul_peak_gflop_s": peak,
              "batch_size": a.batch_size, "rows": rows}
    Path(a.out).write_text(json.dumps(result, indent=2))
    print(markdown(result))


def markdown(result: dict) -> str:
    lines = [f"Machine: {result['machine']} ({result['device']}), torch {result['torch']}, batch {result['batch_size']}; "
             f"matmul peak fp32 {result['matmul_peak_gflop_s']['fp32']:.0f} GFLOP/s, bf16 {result['matmul_peak_gflop_s']['bf16']:.0f} GFLOP/s.",
             "", "| preset | implementation | mode | precision | images/s | GFLOP/image | GFLOP/s | of peak | vs seed-style |",
             "|---|---|---|---|---:|---:|---:|---:|---:|"]
    base = {(r["preset"], r["mode"]): r["images_per_s"] for r in result["rows"] if r["implementation"] == "seed-style"}
    for r in result["rows"]:
        ratio = r["images_per_s"] / base[(r["preset"], r["mode"])]
        lines.append(f"| {r['preset']} | {r['implementation']} | {r['mode']} | {r['precision']} | {r['images_per_s']:.2f} | "
                     f"{r['gflop_per_image']:.2f} | {r['achieved_gflop_s']:.0f} | {100 * r['fraction_of_peak']:.0f}% | {ratio:.2f}x |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
