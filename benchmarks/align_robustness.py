"""How each kind of degradation of a copied slice affects ``align_nn``, plain and with its rival margin.

From one real CT volume (see ``real_ct.py`` for where to get one): 60 member and 60 non-member slices taken
alternately (every member's neighbours are non-members), 240 generated images = 4 degraded copies of each
member. For each degradation alone and all of them together, the ROC-AUC of members vs non-members of
the plain best correlation without a scale search (the detector before the scale search and the rival
margin; with the same affine resampling as now), of the margin over the rival with one global shift per
pair (``local_tile=0``) and of the default (scale search, margin, each tile's own shift), side by side. Members alternating with non-members is the layout where every member's copy has a
close rival: the case the margin was made for, and the one where plain correlation suffers most.

    python benchmarks/align_robustness.py VOLUME [--kinds zoom elastic ...] [--out runs/align-robustness.json]
    python benchmarks/align_robustness.py VOLUME --no-before --prefilter 32 64   # the prefilter against the full search

The kinds marked "beyond" go past what the default search covers (turns beyond 10 degrees, zooms beyond
10%, copies mirrored left to right, as a generator trained with random flips gives back); ``--column
KEY=VALUE ...`` adds a column of the default with those options (``mirror=true``: its mirror search;
``max_scale=0.2``: a wider scale search), ``--no-global`` leaves out the one-shift column.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter, map_coordinates, rotate
from sklearn.metrics import roc_auc_score

from vitprint.cli import _key_values
from vitprint.errors import VitprintError
from vitprint.membership import create_detector
from vitprint.membership.detectors.align_nn import AlignNN
from vitprint.membership.registry import accepted_options

sys.path.insert(0, str(Path(__file__).parent))
from real_ct import _jpeg, _shift, _warp, load_volume, square, window  # noqa: E402


def _noise(img, rng, sigma=4.0):
    return img + rng.normal(0, sigma, img.shape)


def _turn(im, r, low, high):
    """Turned by ``low``-``high`` degrees, either way."""
    return rotate(im, r.choice([-1, 1]) * r.uniform(low, high), reshape=False, order=1, mode="nearest")


def _magnify(im, r, low, high):
    """Magnified or shrunk (either way, at random) by a factor ``1 ± low``-``high`` about the centre."""
    z = 1 + r.choice([-1, 1]) * r.uniform(low, high)
    s = im.shape[0]
    c = (s - 1) / 2
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float64)
    return map_coordinates(im, [(yy - c) / z + c, (xx - c) / z + c], order=1, mode="nearest")


KINDS = {  # each: shifted 4-8 px and re-windowed, plus
    "blur": lambda im, r: _noise(gaussian_filter(_shift(im, r), r.uniform(0, 0.8)), r),
    "zoom": lambda im, r: _noise(_shift(_warp(im, r, elastic=False), r), r),
    "elastic": lambda im, r: _noise(_shift(_warp(im, r, zoom=False), r), r),
    "rotation+strong blur": lambda im, r: _noise(gaussian_filter(_shift(rotate(im, r.uniform(-5, 5), reshape=False, order=1, mode="nearest"), r), 2.5), r, 10),
    "gamma": lambda im, r: _noise(_shift(255 * (np.clip(im, 0, 255) / 255) ** r.uniform(0.7, 1.4), r), r),
    "jpeg q30": lambda im, r: _jpeg(_shift(im, r), 30),
    "all together": lambda im, r: _jpeg(_noise(gaussian_filter(_shift(_warp(rotate(255 * (np.clip(im, 0, 255) / 255) ** r.uniform(0.7, 1.4), r.uniform(-5, 5), reshape=False, order=1, mode="nearest"), r), r), r.uniform(0, 1.5)), r, 6), 30),
    "beyond: turned 10-15 degrees": lambda im, r: _noise(_shift(_turn(im, r, 10, 15), r), r),
    "beyond: turned 15-20 degrees": lambda im, r: _noise(_shift(_turn(im, r, 15, 20), r), r),
    "beyond: zoom 10-15%": lambda im, r: _noise(_shift(_magnify(im, r, 0.10, 0.15), r), r),
    "beyond: zoom 15-20%": lambda im, r: _noise(_shift(_magnify(im, r, 0.15, 0.20), r), r),
    "beyond: mirrored": lambda im, r: _noise(_shift(im[:, ::-1], r), r),
    "beyond: half of them mirrored": lambda im, r: _noise(_shift(im[:, ::-1] if r.random() < 0.5 else im, r), r),
}
BEYOND = [k for k in KINDS if k.startswith("beyond")]
SETTINGS = {"plain, no scale search (before)": {"relative": False, "max_scale": 0.0},
            "scale search and margin, one global shift": {"local_tile": 0},
            "default: scale search, margin and tile-wise shifts": {}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("volume", type=Path)
    p.add_argument("--kinds", nargs="+", choices=list(KINDS), default=[k for k in KINDS if k not in BEYOND],
                   help="degradations to measure (default: all but those marked 'beyond')")
    p.add_argument("--out", type=Path, default=Path("runs/align-robustness.json"))
    p.add_argument("--prefilter", type=int, nargs="+", default=[], metavar="M",
                   help="also the default with its prefilter at M candidates per real image (of the 240 generated; "
                        "the default prefilter, 512, is off at this size)")
    p.add_argument("--no-before", action="store_true", help="leave out the 'before' column")
    p.add_argument("--no-global", action="store_true", help="leave out the one-global-shift column")
    p.add_argument("--column", nargs="+", action="append", default=[], metavar="KEY=VALUE",
                   help="also the default with these align_nn options, e.g. mirror=true or max_scale=0.2 max_rotation=20 "
                        "(repeatable: one column each)")
    a = p.parse_args(argv)
    settings = {k: v for k, v in SETTINGS.items()
                if not (a.no_before and "before" in k) and not (a.no_global and "global" in k)}
    for items in a.column:
        try:
            opts = _key_values(items, "--column")
        except VitprintError as exc:
            p.error(str(exc))
        unknown = set(opts) - set(accepted_options(AlignNN, opts))
        if unknown:
            p.error(f"--column: align_nn has no option {', '.join(sorted(unknown))}")
        try:
            AlignNN(**opts)  # a bad value is refused now, not after the first column has run
        except (VitprintError, TypeError, ValueError, RuntimeError) as exc:
            p.error(f"--column {' '.join(items)}: {exc}")
        settings["default, " + ", ".join(items)] = opts
    settings.update({f"default, prefilter {m}": {"prefilter": m} for m in a.prefilter})
    vol = load_volume(a.volume)
    lungs = [i for i in range(len(vol)) if (vol[i] < -500).mean() > 0.05]
    if len(lungs) < 120:
        raise SystemExit(f"the volume has {len(lungs)} slices with lung, 120 are needed")
    start = (len(lungs) - 120) // 2
    chosen = lungs[start:start + 120]
    members, non = chosen[1::2], chosen[0::2]
    real = np.stack([square(window(vol[s])) for s in members + non]).astype(np.uint8)
    y = np.r_[np.ones(60), np.zeros(60)]
    rows = []
    for kind in a.kinds:
        rng = np.random.default_rng(1)
        gen = []
        for i in range(240):
            base = square(window(vol[members[i % 60]], -600 + rng.uniform(-60, 60), 1500 * rng.uniform(0.9, 1.1)))
            gen.append(np.clip(KINDS[kind](base, rng), 0, 255))
        gen = np.stack(gen).astype(np.uint8)
        row = {"kind": kind}
        for name, opts in settings.items():
            t0 = time.perf_counter()
            scores = create_detector("align_nn", **opts).fit(gen).score_samples(real)
            row[name] = float(roc_auc_score(y, scores))
            row[f"{name} seconds"] = time.perf_counter() - t0
        rows.append(row)
        print(json.dumps(row), flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"volume": a.volume.name, "rows": rows}, indent=2))
    print("| degradation (with shift and re-windowing) | " + " | ".join(settings) + " |")
    print("|---|" + "---|" * len(settings))
    for r in rows:
        print(f"| {r['kind']} | " + " | ".join(f"{r[n]:.3f} ({r[n + ' seconds']:.0f} s)" for n in settings) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
