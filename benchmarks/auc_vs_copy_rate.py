"""Held-out ROC-AUC against the copy rate, over every cell of several membership benchmarks.

Each benchmark's docs section has its own figure; this one puts the cells of
several results files (``vitprint bench --docs`` keeps each beside the docs, in
``docs/results/``) on one axis, so cells with nothing to find are visibly cells
with nothing to find, and prints one line per cell.

    python benchmarks/auc_vs_copy_rate.py docs/results/*.json --out docs/figures/auc_vs_copy_rate.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vitprint.evaluation.bench_report import copy_rate_figure, family_key

OWN = ("recon", "latent_nn", "align_nn", "copy_nn", "subspace", "subspace_cal", "recon_cal")  # vitprint's own rows that read no label


def cell_line(source: str, c: dict) -> str:
    det, peers = c["detectors"], set(c.get("peers", []))

    def best(names):
        name = max(names, key=lambda n: det[n]["roc_auc"], default=None)
        return f"{name} {det[name]['roc_auc']:.3f}" if name else "–"

    copied = f"{c['members_copied']}/{c['members']}" if "members_copied" in c else "–"
    return (f"| {source} | {family_key(c)} | {c['members']} | {c['seed']} | {c['copy_rate']:.3f} | {copied} | "
            f"{best([n for n in OWN if n in det])} | {best([n for n in det if n in peers])} |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", nargs="+", type=Path, help="results.json files of `vitprint bench`")
    p.add_argument("--out", type=Path, required=True, help="the figure (PNG)")
    a = p.parse_args(argv)
    cells, lines = [], []
    for path in a.results:
        try:
            found = [c for c in json.loads(path.read_text()).get("cells", []) if "copy_rate" in c]
        except (OSError, ValueError) as e:
            p.error(f"{path}: not a readable results file ({e})")
        cells += found
        source = path.parent.name if path.stem == "results" else path.stem
        lines += [cell_line(source, c) for c in found]
    if not cells:
        p.error("no cell with a copy rate in these files")
    copy_rate_figure(cells, a.out, title="every cell: held-out ROC-AUC against the copy rate")
    print("| results | table | members | seed | copy rate | members copied | the best of vitprint's own rows (max of "
          f"{len(OWN)}, no labels read) | the best peer row (max of the cell's peers) |\n|---|---|---|---|---|---|---|---|")
    print("\n".join(lines))
    print(f"figure: {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
