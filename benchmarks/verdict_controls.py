"""Does the verdict hold? Null, confounded and leaking simulations through ``vitprint.detect``.

- **null**: members, non-members and the "generated" images are three disjoint sets of phantom patients
  (a generator of other patients: it saw none of the members). "Leak detected" must appear in at most
  5% of the runs.
- **confounded**: as null, but the members come from a noisier scanner than the non-members. The
  blind baseline sees the split; the verdict must be "Inconclusive", never "Leak detected".
- **leak**: the generated images are shifted, re-windowed, noisy copies of the members. The verdict
  must be "Leak detected".

    python benchmarks/verdict_controls.py --runs 50 --out docs/verdict-controls.json

Each finished simulation is saved at once beside ``--out`` (``OUT.partial``); the same command after a crash
continues from there, and ``--out`` is written only when every simulation has run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from scipy.stats import binomtest

import vitprint
from vitprint.benchmark import SCALES, patients, perturb
from vitprint.data.imageset import atomic_write

DETECTORS = ("pixel_nn", "mc", "align_nn")
OPTIONS = {"align_size": 64, "max_rotation": 0.0, "pixel_size": 64}


def one_run(kind: str, seed: int, n: int) -> dict:
    scale = SCALES["cpu"]
    stream = 50_000 + seed
    members, non = patients(0, n, scale, stream), patients(n, n, scale, stream)
    if kind == "leak":
        generated = perturb(np.concatenate([members] * 3), seed)
    else:
        generated = patients(2 * n, 3 * n, scale, stream)
    if kind == "confounded":
        rng = np.random.default_rng([seed, 5])
        members = np.clip(members + rng.normal(0, 12, members.shape), 0, 255).astype(np.uint8)
    real = np.concatenate([members, non])
    labels = np.r_[np.ones(n, int), np.zeros(n, int)]
    r = vitprint.detect(generated, real, labels=labels, detectors=DETECTORS, options=OPTIONS, n_boot=0, seed=seed)
    v = r.verdict
    return {"kind": kind, "seed": seed, "verdict": v["verdict"], "primary": v["primary"], "auc": v["primary_auc"],
            "p": v["p_value"], "blind_auc": v["blind_auc"]}


def _write(path: Path, result: dict) -> None:
    """Replace ``path`` in one step (a crash leaves the previous file whole)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(result, indent=2, default=float)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=50, help="null runs (confounded and leak get a fifth as many)")
    p.add_argument("--n", type=int, default=32,
                   help="members and non-members per run (default: 32, a multiple of the 4 pathology classes, so "
                        "both groups hold each class equally often)")
    p.add_argument("--start", type=int, default=0,
                   help="first seed (default: 0); later seeds extend an earlier run without repeating it")
    p.add_argument("--kinds", nargs="+", choices=("null", "confounded", "leak"), default=["null", "confounded", "leak"],
                   help="which cases to simulate (default: all three)")
    p.add_argument("--merge", nargs="+", type=Path, default=[],
                   help="earlier result files whose runs are counted with these (a seed run twice is an error)")
    p.add_argument("--out", type=Path, default=Path("runs/verdict-controls.json"))
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    runs = {"null": a.runs, "confounded": max(2, a.runs // 5), "leak": max(2, a.runs // 5)}
    plan = [(kind, s) for kind in a.kinds for s in range(a.start, a.start + runs[kind])]
    earlier = []
    for path in a.merge:  # checked before any simulation runs
        old = json.loads(path.read_text())
        if old["n_per_side"] != a.n or tuple(old["detectors"]) != DETECTORS:
            sys.exit(f"{path} was made with other settings (n per side, detectors); not merged")
        earlier += old["runs"]
    seen = Counter([*plan, *((r["kind"], r["seed"]) for r in earlier)])
    if seen and max(seen.values()) > 1:
        sys.exit(f"a seed would run twice: {[k for k, c in seen.items() if c > 1][:3]}; choose --start past the "
                 "merged runs")
    # Finished simulations go to a side file at once (``--out`` may be one of the merged files: it is replaced
    # only at the end); an interrupted run of the same settings continues from it instead of rerunning them.
    partial = a.out.with_name(a.out.name + ".partial")
    settings = {"n_per_side": a.n, "detectors": list(DETECTORS), "options": OPTIONS}
    done = []
    if partial.is_file():
        old = json.loads(partial.read_text())
        if {k: old.get(k) for k in settings} == settings:
            done = [r for r in old["runs"] if (r["kind"], r["seed"]) in set(plan)]
            print(f"continuing from {partial}: {len(done)} of {len(plan)} simulations already run", file=sys.stderr)
    finished = {(r["kind"], r["seed"]) for r in done}
    rows = list(done)
    for kind, s in plan:
        if (kind, s) in finished:
            continue
        rows.append(one_run(kind, s, a.n))
        _write(partial, {**settings, "runs": rows})
    rows += earlier
    summary = {}
    for kind in ("null", "confounded", "leak"):
        got = [r for r in rows if r["kind"] == kind]
        if not got:
            continue
        counts = Counter(r["verdict"] for r in got)
        leaks = counts.get("Leak detected", 0)
        ci = binomtest(leaks, len(got)).proportion_ci(0.95, method="wilson")
        summary[kind] = {"runs": len(got), "verdicts": dict(counts), "leak_rate": leaks / len(got),
                         "leak_rate_ci": [ci.low, ci.high],
                         "median_blind_auc": float(np.median([r["blind_auc"] for r in got]))}
    result = {"seconds": time.perf_counter() - t0, "merged": [str(p) for p in a.merge],
              "n_per_side": a.n, "detectors": DETECTORS, "options": OPTIONS, "summary": summary, "runs": rows}
    _write(a.out, result)
    partial.unlink(missing_ok=True)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
