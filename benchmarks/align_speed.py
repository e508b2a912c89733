"""``align_nn`` scoring time: the searched shifts by a partial inverse DFT against the full inverse FFT.

``align_nn`` needs the correlation of two images only at the shifts it searches (a few pixels each way),
not at all of them. It computes those as matrix products with the rows of the inverse DFT for the
searched shifts (in the pose search, for all pairs at once, without forming each pair's product); before,
it took the whole ``irfft2`` of each pair's product and kept the searched shifts. This script scores the
same images both ways, in turns, in one process (``--repeats`` times each, the fastest kept), and reports
the time of each, their ratio, and how far the scores moved (rounding only: the same sums in another
order). Two shapes of work:

- ``cell``: a ``--scale cpu`` benchmark cell at 256 members, at 64 px (512 real images against 512
  generated, ``align_size`` 64, the pose search over every generated image);
- ``ct``: a real-CT job at 256 px (120 real images against 500 generated, the default options).

The images are phantom slices; half the real images have shifted, re-windowed, noisy copies among the
generated ones (the work does not depend on what they show, the scores do).

    python benchmarks/align_speed.py --out runs/align-speed.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from vitprint.benchmark import perturb
from vitprint.data.phantoms import phantom
from vitprint.membership.detectors.align_nn import AlignNN

CASES = {  # name: (image size, real images, generated images, detector options)
    "cell": (64, 512, 512, {"align_size": 64}),
    "ct": (256, 120, 500, {}),
    "toy": (32, 16, 24, {"align_size": 32, "max_rotation": 0.0}),  # seconds: for the test suite
}


class FullFFT(AlignNN):
    """``align_nn`` with the whole inverse FFT of every pair's product, then the searched shifts kept (the
    earlier computation, in the same chunks of generated images)."""

    def _shift_map(self, a, b, size):
        corr = torch.fft.irfft2(a * b.conj(), s=(size, size))
        idx = self._shifts(size)
        return corr.index_select(-2, idx).index_select(-1, idx)

    def _best_shift(self, a, b, size):
        step = max(1, 2 ** 22 // (len(a) * size ** 2))
        return torch.cat([self._shift_map(a[:, None], b[None, start:start + step], size).flatten(-2).amax(-1)
                          for start in range(0, len(b), step)], 1)


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
    p.add_argument("--cases", nargs="+", choices=list(CASES), default=["cell", "ct"])
    p.add_argument("--repeats", type=int, default=2, help="timed runs of each computation, in turns (default: 2)")
    p.add_argument("--out", type=Path, default=Path("runs/align-speed.json"))
    a = p.parse_args(argv)
    if a.repeats < 1:
        p.error("--repeats must be at least 1")
    rows = []
    for name in a.cases:
        size, n_real, n_gen, options = CASES[name]
        real, generated, labels = case(size, n_real, n_gen)
        times: dict[str, list[float]] = {"partial DFT": [], "full FFT": []}
        scores = {}
        for _ in range(a.repeats):
            for label, cls in (("full FFT", FullFFT), ("partial DFT", AlignNN)):
                t, scores[label] = timed(cls, options, real, generated)
                times[label].append(t)
        new, old = scores["partial DFT"], scores["full FFT"]
        row = {"case": name, "image size": size, "real": n_real, "generated": n_gen, "options": options,
               "seconds": {k: min(v) for k, v in times.items()}, "all seconds": times,
               "speed-up (full FFT / partial DFT)": min(times["full FFT"]) / min(times["partial DFT"]),
               "largest score difference": float(np.abs(new - old).max()),
               "score range": float(np.ptp(old)),
               "ROC-AUC": {"partial DFT": roc_auc_score(labels, new), "full FFT": roc_auc_score(labels, old)}}
        print(json.dumps(row), flush=True)
        rows.append(row)
    out = {"machine": f"{platform.machine()}, {torch.get_num_threads()} threads", "torch": torch.__version__,
           "rows": rows}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
