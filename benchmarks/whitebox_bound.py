"""How much of a VAE cell's membership can be seen from its samples, against what the model itself holds.

Trains the generator of one membership-benchmark cell (``--family vae``, ``--members``, ``--seed``: the
same patients, training length and seed as the cell) or reuses it from ``--out`` (only a generator of that cell,
trained to the end), then scores all the
cell's real images (members against as many non-members; no held-out split: a probe, not a cell) by

- the **white-box** reconstruction error of the VAE itself (encoder mean, then decoder), which no
  black-box detector can read: what the model holds about its members;
- black-box scores from ``--samples`` generated images (the first m of one seeded stream): the nearest generated
  image in pixels (GAN-Leaks' ``pixel_nn``, k = 1) and ``subspace`` / ``subspace_cal`` (the reference set
  is the cell's, other patients never seen).

    python benchmarks/whitebox_bound.py --members 256 --seed 2 --samples 512 2048 8192
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from vitprint.benchmark import SCALES, cell_images, generator_epochs
from vitprint.config import RunConfig
from vitprint.data.dataset import to_model_range
from vitprint.data.imageset import ImageSet
from vitprint.membership import create_detector
from vitprint.membership.knn import knn_distances
from vitprint.training.checkpoint import load_checkpoint, read_meta
from vitprint.training.generator import build, load_generator, sample, train_generator


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--members", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--samples", type=int, nargs="+", default=[512, 2048, 8192], help="generated images per black-box score")
    p.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    p.add_argument("--out", type=Path, help="where the generator is kept (default: runs/whitebox-MEMBERS-sSEED)")
    a = p.parse_args(argv)
    scale, n = SCALES[a.scale], a.members
    reals, reference, _ = cell_images(n, a.seed, scale)  # as run_cell
    labels = np.r_[np.ones(n, int), np.zeros(n, int)]
    a.out = a.out or Path(f"runs/whitebox-{n}-s{a.seed}")
    ckpt = a.out / "gen" / "checkpoints" / "last.safetensors"
    epochs = generator_epochs(n, scale)
    meta = read_meta(ckpt) if ckpt.is_file() else None
    if meta is not None:
        cell = (meta.get("family"), meta.get("train_images"), meta["run"].get("seed"), meta.get("image_size"))
        if cell != ("vae", n, a.seed, scale.image_size):
            p.error(f"{a.out} holds another generator (family, members, seed, size {cell}); choose another --out")
    if meta is None or meta["epoch"] + 1 < epochs:  # none yet, or an interrupted training
        train_generator(ImageSet.from_pixels(reals[:n], "train"),
                        RunConfig(out=str(a.out / "gen"), epochs=epochs, batch_size=scale.batch_size, seed=a.seed,
                                  resume=meta is not None), family="vae")
    meta = read_meta(ckpt)
    vae = build("vae", meta["image_size"], meta["z_dim"], meta["base"])
    load_checkpoint(ckpt, vae)
    with torch.no_grad():
        x = to_model_range(reals)[:, None]
        mu, _ = vae.eval().encoder(x).chunk(2, dim=1)
        err = ((vae.decoder(mu) - x) ** 2).flatten(1).mean(1).numpy()
    row = {"members": n, "seed": a.seed, "whitebox_reconstruction": float(roc_auc_score(labels, -err))}
    gen = load_generator(ckpt)
    for m in a.samples:
        generated = np.concatenate(list(sample(gen, m, seed=a.seed)))
        d, _ = knn_distances(reals, generated, k=1, metric="l2", progress=False)
        row[f"pixel_nn1_{m}"] = float(roc_auc_score(labels, -d[:, 0]))
        for name in ("subspace", "subspace_cal"):
            det = create_detector(name, pixel_size=scale.image_size, seed=a.seed).fit(generated, reference)
            row[f"{name}_{m}"] = float(roc_auc_score(labels, det.score_samples(reals)))
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}))
    (a.out / "bound.json").write_text(json.dumps(row, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
