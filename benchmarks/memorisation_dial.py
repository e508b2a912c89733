"""The memorisation dial: how a generator's copy rate grows with its training length.

Trains one generator (``--family``) on ``--members`` phantom patients of the membership benchmark's
scale (the same patients and seed as its cells), stops at each of ``--epochs`` (a growing list), samples
``--samples`` images there and measures the copy rate (``vitprint.benchmark.copy_rate``: the share of
samples that are near-copies of a member minus the share near a non-member), how many members have a
near-copy, and the ROC-AUC of the plain
1-nearest-neighbour pixel distance on all the real images (members against as many non-members; no
held-out split: a probe, not a benchmark cell). Training continues from the last stop's checkpoint, so
the whole curve costs one training run's time; the random draws (noise, batches) restart from ``--seed``
at each stop, so a stop reached through earlier stops is a generator trained as long, not bit for bit the
one an uninterrupted run (or a benchmark cell) of that length gives. Each stop's row is saved when it is
measured, and a rerun with the same ``--out`` continues from the last stop.

``--ct VOLUME`` takes the members and non-members from a real CT volume instead, as a benchmark cell with
``--ct`` does (axial slices in the lung window dealt in turn, ``vitprint.benchmark.CT_DEALING``, so a
member's neighbouring slices are a non-member and a reference slice). ``--detectors NAME …`` adds,
per stop, the ROC-AUC of each named detector of the registry (fitted on the stop's samples, with the
options a benchmark cell of this scale gives it) on all the real images; detectors that need a reference
set, the job's autoencoder or labelled images are refused before any training. Each stop also records
how its samples vote on their orientation against the real images (``vitprint.data.orientation``, as a
job has them vote): a generator's own images, copies or not, must not be reported turned, let alone
turned back.

    python benchmarks/memorisation_dial.py --family ddpm --members 16 --epochs 500 1000 2000 --out runs/dial-ddpm16
    python benchmarks/memorisation_dial.py --family ddpm --members 16 --epochs 2000 4000 6000 8000 \
        --ct example_ct.nii.gz --detectors pixel_nn mc align_nn subspace --out runs/dial-ddpm16-ct
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from vitprint.benchmark import CT_DEALING_NAME, SCALES, copy_stats, ct_roles, ct_slices, patients
from vitprint.config import RunConfig
from vitprint.data.imageset import ImageSet, atomic_write
from vitprint.data.orientation import check_orientation
from vitprint.errors import VitprintError
from vitprint.membership.knn import knn_distances
from vitprint.membership.registry import create_detector
from vitprint.membership.scoring import ScoreConfig
from vitprint.training.checkpoint import read_meta
from vitprint.training.generator import FAMILIES, load_generator, sample, train_generator


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--family", choices=FAMILIES, default="ddpm")
    p.add_argument("--members", type=int, default=16)
    p.add_argument("--epochs", type=int, nargs="+", default=[500, 1000, 2000],
                   help="the stops, in epochs over the members, increasing (default: 500 1000 2000)")
    p.add_argument("--samples", type=int, default=128, help="images sampled at each stop (default: 128)")
    p.add_argument("--scale", choices=sorted(SCALES), default="cpu", help="whose patients and image size (default: cpu)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ct", metavar="VOLUME", help="members and non-members from this CT volume (NIfTI or multi-frame "
                   "DICOM), dealt in turn as in a benchmark cell with --ct, instead of phantom patients")
    p.add_argument("--detectors", nargs="+", default=[], metavar="NAME",
                   help="also report each named detector's ROC-AUC on all the real images at each stop")
    p.add_argument("--out", type=Path, default=Path("runs/dial"))
    a = p.parse_args(argv)
    if a.members < 2 or a.samples < 1 or sorted(set(a.epochs)) != a.epochs or a.epochs[0] < 1:
        p.error("need --members >= 2, --samples >= 1 and --epochs increasing from >= 1")
    for name in a.detectors:  # refused before any training
        try:
            det = create_detector(name)
        except VitprintError as exc:
            p.error(str(exc))
        if det.needs_reference or det.needs_autoencoder or det.supervised:
            p.error(f"{name} needs a reference set, the job's autoencoder or labelled images; the dial has none")
    scale = SCALES[a.scale]
    if a.ct:
        try:
            reals = np.concatenate(ct_roles(ct_slices([a.ct], scale.image_size), a.members)[:2])  # members first
        except VitprintError as exc:
            p.error(str(exc))
    else:
        reals = patients(0, 2 * a.members, scale, 1000 * a.seed + a.members)  # as a benchmark cell of this size
    members = reals[:a.members]
    labels = np.r_[np.ones(a.members, int), np.zeros(a.members, int)]
    path = a.out / "dial.json"
    setting = {"family": a.family, "members": a.members, "scale": a.scale, "seed": a.seed, "samples": a.samples,
               "batch_size": scale.batch_size, "detectors": a.detectors,
               **({"ct": str(Path(a.ct).resolve()), "dealing": CT_DEALING_NAME} if a.ct else {})}
    options = ScoreConfig(pixel_size=scale.image_size).options(seed=a.seed, **dict(scale.detector_options))
    rows = []
    if path.is_file():
        old = json.loads(path.read_text())
        if old["setting"] != setting:
            p.error(f"{path} holds another setting ({old['setting']}); choose another --out")
        rows = old["rows"]
    done = {r["epochs"] for r in rows}
    last = a.out / "gen" / "checkpoints" / "last.safetensors"
    for epochs in [e for e in a.epochs if e not in done]:
        trained = read_meta(last)["epoch"] + 1 if last.is_file() else 0  # a crash may have left it further on
        if epochs < trained:
            p.error(f"{a.out} already holds a generator trained {trained} epochs; a stop at {epochs} must come after it")
        t0 = time.perf_counter()
        train_generator(ImageSet.from_pixels(members, "train"),
                        RunConfig(out=str(a.out / "gen"), epochs=epochs, batch_size=scale.batch_size, seed=a.seed,
                                  resume=trained > 0), family=a.family)
        gen = load_generator(last)
        samples = np.concatenate(list(sample(gen, a.samples, seed=a.seed)))
        d, _ = knn_distances(reals, samples, k=1, metric="l2", progress=False)
        rate, copied, chance = copy_stats(samples, members, reals[a.members:])
        row = {"epochs": epochs, "copy_rate": rate, "members_copied": copied, "non_members_copied": chance,
               "pixel_nn1_auc": float(roc_auc_score(labels, -d[:, 0]))}
        vote = check_orientation(samples, reals, seed=a.seed)
        row["orientation"] = {"generated": {k: round(v, 3) for k, v in vote.shares.items() if v},
                              "real_among_themselves": {k: round(v, 3) for k, v in vote.baseline.items() if v},
                              "reported": list(vote.turned()), "turned_back": vote.set_turns()}
        for name in a.detectors:  # as a benchmark cell of this scale runs them
            det = create_detector(name, **options).fit(samples)
            row[f"{name}_auc"] = float(roc_auc_score(labels, det.score_samples(reals)))
        rows.append({**row, "seconds": time.perf_counter() - t0})
        print(json.dumps(rows[-1]), flush=True)
        atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps({"setting": setting, "rows": rows}, indent=2)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
