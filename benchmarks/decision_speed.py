"""The decision step of a benchmark cell, side by side: every candidate threshold's Cohen's kappa in one
pass (``kappas_at``, since commit 61d9c50) against one scikit-learn call per candidate (before).

For each chosen cell of a ``vitprint bench`` results file, the script takes the cell's stored scores, draws
its real images again as the cell drew them (phantom cells only) and runs what a cell does after scoring:
``heldout_metrics`` (thresholds and the combiner fitted on one half, metrics on the other) and ``assess``
(the verdict of ``vitprint detect``, cross-validated). It runs each computation in turns (``--repeats``
times each, the fastest kept) in one process, and reports both times, their ratio, and whether the two
gave the same metrics and verdict (they must: the one-pass kappas are scikit-learn's to the last bit).

    python benchmarks/decision_speed.py docs/results/membership-cpu.json --cells vae-64-0 vae-256-0 \\
        --out runs/decision-speed.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from vitprint.api.assess import AssessConfig, assess
from vitprint.benchmark import SCALES, cell_images, heldout_metrics
from vitprint.errors import VitprintError
from vitprint.membership import decisions
from vitprint.membership.registry import detector_class


def per_cut(scores, labels, cuts) -> np.ndarray:
    """The earlier computation: one scikit-learn ``cohen_kappa_score`` call per candidate cut."""
    s, y = np.asarray(scores, float), np.asarray(labels, int)
    return np.asarray([decisions._kappa(y, (s > c).astype(int)) for c in cuts])


def supervised(names) -> list[str]:
    """The scores learnt from the labels (the registry's ``supervised`` detectors): never tested for the
    verdict, as ``run_cell`` passes them. (A phantom cell's reference holds no scored image: nothing in it is
    cross-fitted.)"""
    def learns(name: str) -> bool:
        try:
            return detector_class(name).supervised
        except VitprintError:  # a calibrated variant or the combiner: not a registered detector of its own
            return False
    return [n for n in names if learns(n)]


def decide(cell: dict, reals: np.ndarray) -> tuple[dict, dict]:
    """What a benchmark cell computes after scoring: its held-out metrics and its verdict."""
    n, seed = cell["members"], cell["seed"]
    labels = np.r_[np.ones(n, int), np.zeros(n, int)]
    values = {k: np.asarray(v, float) for k, v in cell["scores"].items()}
    metrics = heldout_metrics(values, labels, seed)
    _, summary, _ = assess(values, labels, np.zeros(len(labels), bool), reals, AssessConfig(n_boot=0, seed=seed),
                           not_for_verdict=supervised(values))
    return metrics, {k: summary["verdict"][k] for k in cell["verdict"]}


def _same(a, b) -> bool:
    """Equal as results files store them (NaN equal to NaN)."""
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", type=Path, help="a `vitprint bench` results file with stored scores (phantom cells)")
    p.add_argument("--cells", nargs="+", default=["vae-64-0", "vae-256-0"], metavar="FAMILY-MEMBERS-SEED",
                   help="the leaking cells to run (default: vae-64-0 vae-256-0)")
    p.add_argument("--repeats", type=int, default=2, help="runs of each computation per cell (default: 2)")
    p.add_argument("--out", type=Path, help="write the rows here as JSON")
    a = p.parse_args(argv)
    if a.repeats < 1:
        p.error("--repeats must be at least 1")
    try:
        data = json.loads(a.results.read_text())
        scale = SCALES[data["scale"]]
        by_name = {f"{c['family']}-{c['members']}-{c['seed']}": c for c in data["cells"] if not c["null"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        p.exit(2, f"decision_speed.py: {a.results} is not a bench results file: {exc}\n")
    rows = []
    for name in a.cells:
        cell = by_name.get(name)
        if cell is None or "scores" not in cell or cell.get("data", "phantoms") != "phantoms":
            p.exit(2, f"decision_speed.py: no phantom cell {name!r} with stored scores in {a.results}\n")
        reals, _, _ = cell_images(cell["members"], cell["seed"], scale)
        seconds, outputs = {"per_cut": [], "one_pass": []}, {}
        for _ in range(a.repeats):
            for way in ("per_cut", "one_pass"):
                patch = mock.patch.object(decisions, "kappas_at", per_cut) if way == "per_cut" else mock.patch.object(
                    decisions, "kappas_at", decisions.kappas_at)
                with patch:
                    t0 = time.perf_counter()
                    outputs[way] = decide(cell, reals)
                    seconds[way].append(time.perf_counter() - t0)
        row = {"cell": name, "per_cut_s": round(min(seconds["per_cut"]), 2),
               "one_pass_s": round(min(seconds["one_pass"]), 2),
               "ratio": round(min(seconds["per_cut"]) / min(seconds["one_pass"]), 2),
               "same_metrics_and_verdict": _same(outputs["per_cut"], outputs["one_pass"]),
               "verdict_as_stored": _same(outputs["one_pass"][1], cell["verdict"])}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"machine": {"cpu": platform.machine(), "threads": torch.get_num_threads()},
                                     "command": " ".join(sys.argv), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
