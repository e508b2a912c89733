"""The attribution job's HTML report: the methods side by side, the confusion matrix, and the most and
least confident generated images beside their nearest real images (every figure embedded)."""

from __future__ import annotations

import html
import tempfile
from pathlib import Path

import numpy as np

from vitprint.data.imageset import atomic_write
from vitprint.evaluation import plots
from vitprint.evaluation.report import STYLE, _fmt, _img

PARTS = {"dev": "labelled generated images (the classifier cross-validated)", "pool": "the pool (labelled)"}


def _table(summary: dict) -> str:
    rows = []
    for method, parts in summary["results"].items():
        for part, r in parts.items():
            m, ci = r["metrics"], r.get("intervals", {})
            chosen = " ✔" if method == summary["method"] else ""
            rows.append(f"<tr><td>{html.escape(method)}{chosen}</td><td>{PARTS[part]}</td><td>{m['n']}</td>"
                        f"<td>{_fmt(m['accuracy'], ci.get('accuracy'))}</td><td>{_fmt(m['macro_f1'], ci.get('macro_f1'))}</td>"
                        f"<td>{_fmt(m['kappa'])}</td><td>{_fmt(m['adjusted_rand'])}</td></tr>")
    if not rows:
        return "<p>No labelled generated images: no method could be measured.</p>"
    head = "<tr><th>method</th><th>measured on</th><th>images</th><th>accuracy</th><th>macro-F1</th><th>κ</th><th>ARI</th></tr>"
    return f"<table>{head}{''.join(rows)}</table>"


def write_attribution_report(summary: dict, examples: dict | None, path: Path) -> Path:
    """Write ``path`` (one self-contained HTML file)."""
    subsets = summary["subsets"]
    chosen = summary["results"].get(summary["method"], {})
    part = "pool" if "pool" in chosen else "dev" if "dev" in chosen else None
    parts = ["<h1>Attribution: which subset's generator made each image</h1>",
             f"<p>{len(subsets)} subsets ({html.escape(', '.join(subsets))}); real images per subset "
             f"{summary['counts']['real']}; labelled generated images {summary['counts']['labelled_generated'] or 'none'}; "
             f"pool {summary['counts']['pool']} images.</p>",
             f"<p class='note'>The run file follows <b>{html.escape(summary['method'])}</b>: "
             f"{html.escape(summary['why'])}.</p>", "<h2>Methods</h2>", _table(summary)]
    if summary["counts"].get("pool_unread"):
        unread = summary["counts"]["pool_unread"]
        parts.append(f"<p class='warn'>{len(unread)} pool image(s) could not be read and have no line in the run "
                     f"file: {html.escape(', '.join(Path(f).name for f in unread[:10]))}.</p>")
    none = summary["none_of_these"]
    if "pool_flagged" in none:
        parts.append(f"<p><b>None of these:</b> {none['pool_flagged']} of {summary['counts']['pool']} pool images "
                     f"score lower in {html.escape(none['measure'])} than {100 * (1 - none['rate']):.0f}% of the "
                     f"images known to come from a subset's generator (threshold {none['threshold']:.3f}, calibrated "
                     f"on {html.escape(none['calibrated_on'])}). They keep their best subset in the run file, which "
                     "must name one, and read 'none' in attribution.csv.</p>")
    with tempfile.TemporaryDirectory() as tmp:
        if part:
            fig = plots.confusion_plot(np.asarray(chosen[part]["confusion"]), subsets, Path(tmp) / "confusion.png",
                                       title=f"{summary['method']} on {PARTS[part]}")
            parts += ["<h2>Confusion matrix</h2>", _img(fig)]
        for name, ex in (examples or {}).items():
            fig = plots.image_pairs(ex["generated"], ex["real"], Path(tmp) / f"{name.replace(' ', '_')}.png",
                                    titles=("generated", "nearest real"), captions=ex["captions"])
            parts += [f"<h2>The {html.escape(name)} attributions</h2>", _img(fig)]
        if summary.get("command"):
            parts.append(f"<h2>Reproduce</h2><pre>{html.escape(summary['command'])}</pre>")
        body = "\n".join(parts)
        doc = f"<!doctype html><meta charset='utf-8'><title>vitprint attribution</title><style>{STYLE}</style>{body}"
        atomic_write(path, lambda t: Path(t).write_text(doc))
    return path
