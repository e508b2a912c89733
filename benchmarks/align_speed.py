"""``align_nn`` scoring time, side by side with an earlier version of it on the same images.

The earlier version is ``src/vitprint/membership/detectors/align_nn.py`` as it was at a git revision
(``--reference``, default 8c3a0a4: before the searched shifts were computed as a partial inverse DFT, the
pose search as batched matrix products, each distinct (image, pose) posed once and the affine grids by
broadcasting) or a file. Both score the same images, in turns, in one process (``--repeats`` times each, the
fastest kept); the script reports the time of each, their ratio, and how far the scores moved (rounding
only, where the change is a faster computation of the same sums). The shapes of work:

- ``cell``: a ``--scale cpu`` benchmark cell at 256 members, at 64 px (512 real images against 512
  generated, ``align_size`` 64, the pose search over every generated image);
- ``ct``: a job shaped like the real-CT case at 256 px (120 real images against 500 generated, the default
  options but the pose grid and shift reach of before 2026-12-07, ``GRID``);
- ``ct-prefilter``: the same with 1,000 generated images, above the 512 from which each real image's pose
  search is limited to its shortlist (the path large jobs take).
- ``cell-now`` and ``ct-now``: the ``cell`` and ``ct`` work with the search as it is since 2026-12-07
  (``cell-now``: the cpu scale's options, the coarser grid with the 10% shift reach; ``ct-now``: ``detect``'s
  defaults at 256 px, the finer grid with the 10% reach), each option spelt out (``NOW``), so both
  versions compute the same sums whatever the reference's own defaults.

The images are phantom slices; half the real images have shifted, re-windowed, noisy copies among the
generated ones (the work does not depend on what they show, the scores do).

    python benchmarks/align_speed.py --out runs/align-speed.json
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
import types
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from vitprint.benchmark import perturb
from vitprint.data.phantoms import phantom
from vitprint.membership.detectors.align_nn import COARSE_GRID, AlignNN

# The pose grid, tiles and shift reach the earlier versions had as defaults (finer and wider since
# 2026-12-07), given to both versions, so that they compute the same sums.
GRID = {**COARSE_GRID, "max_shift": 0.06}
# `detect`'s search since 2026-12-07 (align_nn's defaults), written out for references with other defaults.
NOW = {"rotation_step": 1.25, "scale_step": 0.025, "local_tile": 24, "max_shift": 0.1}
CASES = {  # name: (image size, real images, generated images, detector options)
    "cell": (64, 512, 512, {"align_size": 64, **GRID}),
    "ct": (256, 120, 500, dict(GRID)),
    "ct-prefilter": (256, 120, 1000, dict(GRID)),  # above 512 generated: each real image's pose search on its shortlist
    "toy": (32, 16, 24, {"align_size": 32, "max_rotation": 0.0, **GRID}),  # seconds: for the test suite
    # The same work with the search of 2026-12-07 on: the cpu scale's options (its pose grid, the 10% reach)
    # and `detect`'s defaults at 256 px (the finer grid, the 10% reach).
    "cell-now": (64, 512, 512, {"align_size": 64, **COARSE_GRID, "max_shift": NOW["max_shift"]}),
    "ct-now": (256, 120, 500, dict(NOW)),
}
MODULE = "src/vitprint/membership/detectors/align_nn.py"


def reference_class(reference: str):
    """The ``AlignNN`` class of ``reference``: a file, or a git revision of this repository's module."""
    path = Path(reference)
    if path.is_file():
        source = path.read_text()
    else:
        root = Path(__file__).resolve().parents[1]
        try:
            shown = subprocess.run(["git", "show", f"{reference}:{MODULE}"], cwd=root, capture_output=True, text=True)
        except OSError as exc:
            sys.exit(f"align_speed.py: cannot run git to read {MODULE} at {reference!r}: {exc}")
        if shown.returncode:
            sys.exit(f"align_speed.py: cannot read {MODULE} at {reference!r}: {shown.stderr.strip()}")
        source = shown.stdout
    module = types.ModuleType("align_nn_reference")
    # Its class is not registered as a detector (the name is taken by the current one).
    with mock.patch("vitprint.membership.registry.register_detector", lambda cls: cls):
        exec(compile(source, f"{reference}:{MODULE}", "exec"), module.__dict__)
    return module.AlignNN


def case(size: int, n_real: int, n_gen: int, seed: int = 0):
    """``(real, generated, labels)``: half the real images copied (shifted, re-windowed, noisy) into the
    generated set, the rest of it new phantoms."""
    rng = np.random.default_rng(seed)
    real = np.stack([phantom(rng, "normal", size) for _ in range(n_real)])
    members = n_real // 2
    copies = perturb(real[rng.integers(0, members, n_gen // 2)], seed)
    novel = np.stack([phantom(rng, "normal", size) for _ in range(n_gen - len(copies))])
    labels = np.r_[np.ones(members, int), np.zeros(n_real - members, int)]
    return real, np.concatenate([copies, novel]), labels


def timed(cls, options, real, generated) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    scores = cls(**options).fit(generated).score_samples(real)
    return time.perf_counter() - t0, scores


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", nargs="+", choices=list(CASES), default=["cell", "ct", "ct-prefilter"])
    p.add_argument("--repeats", type=int, default=2, help="timed runs of each computation, in turns (default: 2)")
    p.add_argument("--reference", default="8c3a0a4",
                   help="the earlier align_nn: a git revision of this repository or a file (default: 8c3a0a4)")
    p.add_argument("--out", type=Path, default=Path("runs/align-speed.json"))
    a = p.parse_args(argv)
    if a.repeats < 1:
        p.error("--repeats must be at least 1")
    earlier = reference_class(a.reference)
    rows = []
    for name in a.cases:
        size, n_real, n_gen, options = CASES[name]
        real, generated, labels = case(size, n_real, n_gen)
        times: dict[str, list[float]] = {"current": [], "reference": []}
        scores = {}
        for r in range(a.repeats):  # in turns, each first every other time
            for label, cls in (("reference", earlier), ("current", AlignNN))[::1 if r % 2 == 0 else -1]:
                t, scores[label] = timed(cls, options, real, generated)
                times[label].append(t)
        new, old = scores["current"], scores["reference"]
        row = {"case": name, "image size": size, "real": n_real, "generated": n_gen, "options": options,
               "seconds": {k: min(v) for k, v in times.items()}, "all seconds": times,
               "speed-up (reference / current)": min(times["reference"]) / min(times["current"]),
               "largest score difference": float(np.abs(new - old).max()),
               "score range": float(np.ptp(old)),
               "ROC-AUC": {"current": roc_auc_score(labels, new), "reference": roc_auc_score(labels, old)}}
        print(json.dumps(row), flush=True)
        rows.append(row)
    out = {"machine": f"{platform.machine()}, {torch.get_num_threads()} threads", "torch": torch.__version__,
           "reference": a.reference, "rows": rows}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
