"""Training and inference throughput of vitprint's presets next to a seed-style implementation.

Side by side in one run, on the same machine and data:

* **vitprint**: timm ViT (fused attention) + decoder, images decoded once into
  the uint8 cache, fp32 and bf16 autocast.
* **seed-style**: the same network written the way the seed's notebook does it:
  torchvision ``vit_b_16`` (or a torchvision ViT of the tiny preset's shape),
  interpolation to the ViT size, fp32, a plain loop, every batch decoded from PNG.

Also measures the machine's matmul peak (fp32, bf16) and reports achieved
GFLOP/s as a fraction of it. vitprint's training rows read batches the way
``vitprint train`` does (uint8 DataLoader, pinned, scaled on the device) and
also run on one batch already on the device: the ratio is the input path's
efficiency (1.0: the input never holds the device back). ``--compile both``
adds torch.compile rows; ``--scoring SCALE`` adds the membership benchmark's
scoring-speed part; ``--profile`` adds, per preset, where one fp32 inference
batch of vitprint's model spends its time (operator shares, and the matmuls'
own GFLOP/s against the peak). Usage::

    python benchmarks/throughput.py --presets seed tiny --out docs/throughput.json
    bash benchmarks/gpu_check.sh OUT          # the prepared GPU check (see README)
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

from torch.utils.data import DataLoader

from vitprint.data.dataset import DeviceBatches, ImageTensors
from vitprint.data.folders import list_images
from vitprint.data.imageset import load_images
from vitprint.data.phantoms import make_phantoms
from vitprint.models.autoencoder import Autoencoder
from vitprint.models.decoder import Decoder
from vitprint.models.info import flop_counter, model_info
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


def bench_preset(name: str, files: list[Path], batch: int, steps: int, device: torch.device,
                 precisions=("fp32", "bf16"), compile_modes=(False,)) -> list[dict]:
    cfg = model_config(name)
    info = model_info(cfg)
    cached = load_images(files, cfg.image_size, cache_dir=Path(tempfile.mkdtemp()), show_progress=False)
    n = len(cached)

    def batch_idx(i):
        return [(i * batch + k) % n for k in range(batch)]

    rows = []
    # vitprint's input path, as `vitprint train` reads: uint8 items, pinned on a GPU, scaled on the device.
    loader = DataLoader(ImageTensors(cached), batch_size=batch, shuffle=True, drop_last=True,
                        pin_memory=device.type == "cuda")

    def batches():
        while True:
            yield from DeviceBatches(loader, device)

    def run(label, model, get_x, precision, train, compile_model=False):
        model = model.to(device).train(train)
        if label == "vitprint" and device.type == "cuda":
            model.decoder.to(memory_format=torch.channels_last)
        fused = label == "vitprint" and device.type in ("cuda", "cpu")
        opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=fused)
        runner = torch.compile(model) if compile_model else model
        dtype = torch.bfloat16 if precision == "bf16" else None

        def step_on(x):
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                if train:
                    loss = F.mse_loss(runner(x).float(), x)
                    loss.backward()
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                else:
                    with torch.no_grad():
                        runner(x)

        ips = time_loop(lambda i: step_on(get_x(i).to(device)), steps, batch, device)
        row = {"preset": name, "implementation": label, "mode": "train" if train else "inference",
               "precision": precision, "compile": compile_model, "batch_size": batch, "images_per_s": ips}
        if label == "vitprint" and train:  # the same steps on one batch already on the device: compute only
            staged = get_x(0).to(device)
            row["compute_only_images_per_s"] = time_loop(lambda i: step_on(staged), steps, batch, device)
            row["input_efficiency"] = ips / row["compute_only_images_per_s"]
        flop_columns(row, info)
        rows.append(row)
        print(f"{name:5s} {label:11s} {'train' if train else 'infer':5s} {precision} batch {batch}"
              f"{' compiled' if compile_model else ''}: {ips:8.2f} img/s"
              + (f" (input path {100 * row['input_efficiency']:.0f}% of compute-only)" if "input_efficiency" in row else ""),
              flush=True)

    stream = batches()
    ours_x = lambda i: next(stream)  # noqa: E731
    seed_x = lambda i: decode_batch([files[k] for k in batch_idx(i)], cfg.image_size)  # noqa: E731
    for train in (True, False):
        torch.manual_seed(0)
        run("seed-style", seed_style_model(cfg), seed_x, "fp32", train)
        for precision in precisions:
            for compile_model in (compile_modes if precision == "bf16" else (False,)):  # the GPU default
                torch.manual_seed(0)
                run("vitprint", Autoencoder(cfg), ours_x, precision, train, compile_model)
    return rows


def profile_inference(name: str, batch: int, device: torch.device, top: int = 6) -> dict:
    """Operator shares of one fp32 inference batch (after a warm-up) and the dense layers' own GFLOP/s."""
    cfg = model_config(name)
    model = Autoencoder(cfg).to(device).eval()
    x = torch.rand(batch, 1, cfg.image_size, cfg.image_size, device=device) * 2 - 1
    with torch.no_grad():
        model(x)
        with torch.profiler.profile() as prof:
            model(x)
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ops)
    counter = flop_counter()
    with torch.no_grad(), counter:
        model(x)
    dense = (torch.ops.aten.addmm, torch.ops.aten.mm)  # linear layers with and without a bias
    flop = sum(v for op, v in counter.get_flop_counts()["Global"].items() if op in dense)
    seconds = sum(e.self_cpu_time_total for e in ops if e.key in ("aten::addmm", "aten::mm")) / 1e6
    return {"preset": name, "batch_size": batch, "seconds": total / 1e6,
            "shares": {e.key: e.self_cpu_time_total / total for e in ops[:top]},
            "dense_seconds": seconds, "dense_gflop": flop / 1e9,
            "dense_gflop_s": flop / seconds / 1e9 if seconds else None}


FLOP_COUNT = "torch.utils.flop_counter, with the CPU's fused attention kernel counted (vitprint.models.info.flop_counter)"


def flop_columns(row: dict, info: dict) -> None:
    """A measured row's GFLOP per image (training step or forward pass) and achieved GFLOP/s."""
    gflop = info["train_step_gflop" if row["mode"] == "train" else "autoencoder_gflop"]
    row.update({"gflop_per_image": gflop, "achieved_gflop_s": row["images_per_s"] * gflop})


def add_fractions(rows: list[dict], peak: dict) -> None:
    """Each row's achieved GFLOP/s as a share of the matmul peak of its precision."""
    for r in rows:
        r["fraction_of_peak"] = r["achieved_gflop_s"] / peak[r["precision"]]


def recount(result: dict) -> dict:
    """The FLOP columns of an earlier run's result, recomputed with the current FLOP count from the
    images/s it measured (nothing is timed again)."""
    info = {}
    for r in result["rows"]:
        if r["preset"] not in info:
            info[r["preset"]] = model_info(model_config(r["preset"]))
        flop_columns(r, info[r["preset"]])
    add_fractions(result["rows"], result["matmul_peak_gflop_s"])
    result["flop_count"] = FLOP_COUNT
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["seed", "tiny"])
    ap.add_argument("--batch-sizes", "--batch-size", nargs="+", type=int, default=[8])
    ap.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"])
    ap.add_argument("--compile", choices=["off", "on", "both"], default="off", help="torch.compile rows (default: off)")
    ap.add_argument("--images", type=int, default=16, help="phantom images per class to read (default: 16)")
    ap.add_argument("--scoring", choices=["toy", "cpu", "gpu"], help="also run the membership benchmark's scoring-speed part at this scale")
    ap.add_argument("--steps", type=int, default=3, help="timed batches per measurement (after one warm-up)")
    ap.add_argument("--tiny-steps", type=int, default=20, help="timed batches for the tiny preset")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--profile", action="store_true", help="also profile one fp32 inference batch of each preset (CPU only)")
    ap.add_argument("--recount", metavar="JSON", help="recompute the FLOP columns of an earlier run's JSON from the "
                    "images/s it measured, with the current FLOP count; rewrites it and prints its table; times nothing")
    ap.add_argument("--out", default="throughput.json")
    ap.add_argument("--markdown", help="also write the table to this file")
    a = ap.parse_args()
    if a.recount:
        if a.profile or a.scoring:
            ap.error("--recount times nothing: it cannot take --profile or --scoring")
        result = recount(json.loads(Path(a.recount).read_text()))
        Path(a.recount).write_text(json.dumps(result, indent=2))
        if a.markdown:
            Path(a.markdown).write_text(markdown(result) + "\n")
        print(markdown(result))
        return
    if a.profile and torch.cuda.is_available():
        ap.error("--profile measures CPU operator time; this machine runs the benchmark on its GPU")
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    peak = {"fp32": matmul_peak(torch.float32, device), "bf16": matmul_peak(torch.bfloat16, device)}
    print(f"device {device}, matmul peak fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.0f} GFLOP/s", flush=True)
    modes = {"off": (False,), "on": (True,), "both": (False, True)}[a.compile]
    with tempfile.TemporaryDirectory() as tmp:
        make_phantoms(tmp, per_class=a.images, size=256, seed=0)
        files = list_images(tmp)
        rows = []
        for name in a.presets:
            steps = a.tiny_steps if name == "tiny" else a.steps
            for batch in a.batch_sizes:  # compiled rows at the largest batch only: each compile takes a while
                rows += bench_preset(name, files, batch, steps, device, a.precisions,
                                     modes if batch == max(a.batch_sizes) else (False,))
    add_fractions(rows, peak)
    machine = torch.cuda.get_device_name() if device.type == "cuda" else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    result = {"device": str(device), "machine": machine, "torch": torch.__version__, "matmul_peak_gflop_s": peak,
              "batch_sizes": a.batch_sizes, "rows": rows, "flop_count": FLOP_COUNT}
    if a.scoring:
        from vitprint.benchmark import SCALES, scoring_speed

        result["scoring"] = {"scale": a.scoring, "rows": scoring_speed(SCALES[a.scoring], None, str(device))}
    if a.profile:
        result["profile"] = [profile_inference(n, max(a.batch_sizes), device) for n in a.presets]
        for pr in result["profile"]:
            print(f"{pr['preset']} fp32 inference, batch {pr['batch_size']}: "
                  + ", ".join(f"{k} {100 * v:.1f}%" for k, v in pr["shares"].items())
                  + (f"; dense layers at {pr['dense_gflop_s']:.0f} GFLOP/s (matmul peak {peak['fp32']:.0f})"
                     if pr["dense_gflop_s"] else ""), flush=True)
    Path(a.out).write_text(json.dumps(result, indent=2))
    table = markdown(result)
    if a.markdown:
        Path(a.markdown).write_text(table + "\n")
    print(table)


def markdown(result: dict) -> str:
    batches = result.get("batch_sizes", [result.get("batch_size")])
    lines = [f"Machine: {result['machine']} ({result['device']}), torch {result['torch']}, batch {', '.join(map(str, batches))}; "
             f"matmul peak fp32 {result['matmul_peak_gflop_s']['fp32'] / 1000:.2f} TFLOP/s, bf16 "
             f"{result['matmul_peak_gflop_s']['bf16'] / 1000:.2f} TFLOP/s.",
             "", "| preset | batch | implementation | mode | precision | compile | images/s | GFLOP/image | TFLOP/s | of peak | vs seed-style | input path |",
             "|---|---:|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
    base = {(r["preset"], r["mode"], r.get("batch_size")): r["images_per_s"] for r in result["rows"]
            if r["implementation"] == "seed-style"}
    for r in result["rows"]:
        ratio = r["images_per_s"] / base[(r["preset"], r["mode"], r.get("batch_size"))]
        eff = f"{100 * r['input_efficiency']:.0f}%" if "input_efficiency" in r else "–"
        lines.append(f"| {r['preset']} | {r.get('batch_size', '')} | {r['implementation']} | {r['mode']} | {r['precision']} | "
                     f"{'on' if r.get('compile') else 'off'} | {r['images_per_s']:.2f} | {r['gflop_per_image']:.2f} | "
                     f"{r['achieved_gflop_s'] / 1000:.3f} | {100 * r['fraction_of_peak']:.0f}% | {ratio:.2f}x | {eff} |")
    for r in result.get("scoring", {}).get("rows", []):
        if r is result["scoring"]["rows"][0]:
            lines += ["", f"Scoring, the membership benchmark's part ({result['scoring']['scale']} scale):", "",
                      "| detector | generated | real images/s | peak extra MB |", "|---|---:|---:|---:|"]
        lines.append(f"| {r['detector']} | {r['generated']} | {r['real_per_s']:.0f} | {r['peak_extra_mb']:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
