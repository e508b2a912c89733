"""Judge the benchmark's combined row again from the scores its cells kept, without training anything.

Every membership cell keeps each real image's scores (members first) beside its
held-out metrics. When the decision rule changes, this recomputes each cell's
``combined`` entry with the current rule on the same held-out split, prints the
old and the new ROC-AUC, writes the results file back (atomically) and the
summary with it; rerunning the same ``vitprint bench ... --docs`` command then
renders the docs section from it (every cell is done, so nothing is trained).
Only the combined row moves: every other row is each detector's own score.

A rule changed after looking at these cells is not tested afresh by them: say so
beside any figure this gives.

    python benchmarks/recombine.py runs/bench-cpu/results.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from vitprint.benchmark import heldout_metrics, summarise
from vitprint.data.imageset import atomic_write
from vitprint.evaluation.bench_report import family_key


def recombine(results: dict) -> list[str]:
    """Recompute every cell's ``combined`` entry that has stored scores; one line per cell."""
    lines = []
    for c in results["cells"]:
        if "scores" not in c:
            lines.append(f"{family_key(c)}, {c['members']} members, seed {c['seed']}: no stored scores, left as it is")
            continue
        labels = np.r_[np.ones(c["members"], int), np.zeros(c["members"], int)]
        new = heldout_metrics({k: np.asarray(v, float) for k, v in c["scores"].items()}, labels, c["seed"])["combined"]
        old = c["detectors"]["combined"]
        lines.append(f"{family_key(c)}, {c['members']} members, seed {c['seed']}: combined {old['roc_auc']:.3f} "
                     f"({old.get('choice', 'logistic')}) -> {new['roc_auc']:.3f} ({new['choice']})")
        c["detectors"]["combined"] = new
    results["summary"] = summarise(results["cells"])
    results["recombined"] = time.strftime("%Y-%m-%d %H:%M")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", type=Path, help="results.json of `vitprint bench` (membership)")
    p.add_argument("--dry-run", action="store_true", help="print the old and new figures, write nothing")
    a = p.parse_args(argv)
    try:
        results = json.loads(a.results.read_text())
        if results.get("task", "membership") != "membership" or "cells" not in results:
            raise ValueError("not the results of a membership benchmark")
    except (OSError, ValueError) as e:
        print(f"error: {a.results}: {e}", file=sys.stderr)
        return 2
    for line in recombine(results):
        print(line)
    if not a.dry_run:
        atomic_write(a.results, lambda tmp: Path(tmp).write_text(json.dumps(results, indent=2, default=float)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
