"""``align_nn`` under several settings of its options, on the same images: saved real-CT cases and the
benchmark's own phantom cells.

Each setting is a name and the detector options it changes (``--setting NAME='{"rotation_step": 2.5}'``;
by default ``earlier``, the pose grid, tiles and shift reach before 2026-12-07, and ``now``, today's defaults
of those options, given explicitly so that they also override the cpu scale's own, which keeps the earlier
grid).
Each row records every option the setting gave the detector. Two kinds of
work, each giving the ROC-AUC of ``align_nn`` on every labelled real image (no held-out split: one
detector's ranking, not a decision):

- ``case DIR ...``: folders in the challenge layout that ``benchmarks/real_ct.py`` wrote (``DIR/dev``,
  ``DIR/test``): the development real images scored together against the development generated set, the
  test images their rivals, as ``vitprint detect`` scores them;
- ``phantoms``: the ``--scale cpu`` VAE cells at ``--members`` (64) for ``--seeds`` (0 1 2), leaking and
  null, each generator trained and sampled exactly as ``vitprint bench`` does (the same seeds give the same
  samples), each scored plain and perturbed (``--perturb``'s shift, re-windowing and noise); the samples
  are kept in ``--out``'s folder, so a second run trains nothing.

One JSON line per (image set, setting) is printed and appended to ``--out``; its ``seconds`` are the
detector's fitting and scoring. The phantoms are scored with the cpu scale's detector options, then the
setting's.

    python benchmarks/align_grid.py case runs/ct-thin-warped-apart/data --out runs/align-grid.jsonl
    python benchmarks/align_grid.py phantoms --out runs/align-grid.jsonl
"""

from __future__ import annotations

import argparse
import functools
import inspect
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from vitprint.benchmark import SCALES, cell_images, perturb, train_and_sample
from vitprint.config import DataConfig
from vitprint.data.imageset import ImageSet
from vitprint.data.sources import read_folders
from vitprint.errors import VitprintError
from vitprint.membership.detectors.align_nn import COARSE_GRID
from vitprint.membership.registry import accepted_options, create_detector, detector_class
from vitprint.membership.scoring import ScoreConfig, compute_scores

EARLIER = {**COARSE_GRID, "max_shift": 0.06}  # the search before 2026-12-07: pose grid, tiles, reach
NOW = {k: inspect.signature(detector_class("align_nn")).parameters[k].default for k in EARLIER}


@functools.lru_cache(maxsize=8)
def _folder(path: Path, size: int) -> np.ndarray:
    """The folder's images as ``vitprint detect`` reads them, at ``size`` px (read once per size)."""
    if not any(path.glob("*")):
        raise SystemExit(f"{path} holds no images")
    return read_folders([path], size, DataConfig(no_cache=True)).pixels


def score_case(root: Path, options: dict) -> dict:
    """``align_nn``'s ROC-AUC on a case's development images, the test images as rivals."""
    detector = create_detector("align_nn", **options)
    size = detector.image_size
    used, not_used = _folder(root / "dev" / "real_used", size), _folder(root / "dev" / "real_not_used", size)
    others, generated = _folder(root / "test" / "real_unknown", size), _folder(root / "dev" / "generated", size)
    t0 = time.perf_counter()  # the images are read once per size: the first setting would pay for it
    detector.fit(generated)
    scores, _ = detector.score_with_evidence(np.concatenate([used, not_used]), others=others)
    labels = np.r_[np.ones(len(used)), np.zeros(len(not_used))]
    return {"images": str(root), "roc_auc": round(float(roc_auc_score(labels, scores)), 4),
            "members_winning": int((scores[:len(used)] > 0).sum()), "non_members_winning": int((scores[len(used):] > 0).sum()),
            "seconds": round(time.perf_counter() - t0, 1)}


def phantom_cells(out: Path, members: int, seeds: list[int]) -> list[Path]:
    """The cpu scale's VAE cells (leaking and null), generated as ``vitprint bench`` does; kept in ``out``."""
    scale, files = SCALES["cpu"], []
    for seed in seeds:
        for null in (False, True):
            f = out / f"vae{members}-seed{seed}{'-null' if null else ''}.npz"
            files.append(f)
            if f.exists():
                continue
            reals, _, trained_on = cell_images(members, seed, scale, null)
            shutil.rmtree(out / "generator", ignore_errors=True)
            samples = train_and_sample("vae", trained_on, seed, scale, out / "generator")
            np.savez(f.with_suffix(".tmp.npz"), reals=reals, samples=samples, seed=seed)
            f.with_suffix(".tmp.npz").replace(f)
    return files


def score_phantoms(f: Path, options: dict, perturbed: bool) -> dict:
    scale = SCALES["cpu"]
    d = np.load(f)
    seed, n = int(d["seed"]), len(d["reals"]) // 2
    samples = perturb(d["samples"], seed) if perturbed else d["samples"]
    context = ScoreConfig(detectors=("align_nn",), pixel_size=scale.image_size).options(seed=seed, **dict(scale.detector_options))
    t0 = time.perf_counter()
    scores = compute_scores(ImageSet.from_pixels(d["reals"], "real"), ImageSet.from_pixels(samples, "generated"),
                            ("align_nn",), {**context, **options}).values["align_nn"]
    return {"images": f.stem + (" perturbed" if perturbed else ""),
            "roc_auc": round(float(roc_auc_score(np.r_[np.ones(n), np.zeros(n)], scores)), 4),
            "seconds": round(time.perf_counter() - t0, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("kind", choices=("case", "phantoms"))
    p.add_argument("dirs", nargs="*", type=Path, help="with 'case': the case folders (real_ct.py's OUT/data)")
    p.add_argument("--setting", action="append", metavar="NAME=JSON",
                   help="a setting's name and its align_nn options as JSON (repeatable; default: earlier and now)")
    p.add_argument("--members", type=int, default=64, help="with 'phantoms': the cells' member-set size (default: 64)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="with 'phantoms': the cells' seeds (default: 0 1 2)")
    p.add_argument("--out", type=Path, default=Path("runs/align-grid.jsonl"))
    a = p.parse_args(argv)
    settings = {"earlier": EARLIER, "now": NOW}
    if a.setting:
        settings = {}
        for item in a.setting:
            name, sep, text = item.partition("=")
            if not name or name in settings:
                p.error(f"--setting needs a name of its own, got {item!r}")
            try:
                settings[name] = json.loads(text) if sep else None
            except json.JSONDecodeError:
                settings[name] = None
            if not isinstance(settings[name], dict):
                p.error(f"--setting needs NAME=JSON with a JSON object, got {item!r}")
            unknown = set(settings[name]) - set(accepted_options(detector_class("align_nn"), settings[name]))
            if unknown:
                p.error(f"--setting {name}: align_nn takes no option {', '.join(sorted(unknown))}")
    for name, options in settings.items():  # every setting's values checked before any work
        try:
            create_detector("align_nn", **options)
        except (VitprintError, TypeError, ValueError) as e:
            p.error(f"--setting {name}: {e}")
    if a.members < 1 or min(a.seeds) < 0:
        p.error(f"--members must be >= 1 and --seeds >= 0, got {a.members} and {a.seeds}")
    if (a.kind == "case") != bool(a.dirs):
        p.error("give case folders with 'case', and only with it")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    if a.kind == "case":
        work = [(lambda o, d=d: score_case(d, o)) for d in a.dirs]
    else:
        files = phantom_cells(a.out.parent / f"{a.out.stem}-phantoms", a.members, a.seeds)
        work = [(lambda o, f=f, pt=pt: score_phantoms(f, o, pt)) for f in files for pt in (False, True)]
    for job in work:
        for name, options in settings.items():
            row = {"setting": name, "options": options, **job(options)}
            print(json.dumps(row), flush=True)
            with a.out.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
