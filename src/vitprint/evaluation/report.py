"""One self-contained HTML report per detection run (every figure embedded)."""

from __future__ import annotations

import base64
import datetime
import html
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_curve

from vitprint.data.sources import subset
from vitprint.evaluation import plots
from vitprint.inference import reconstruct

KEYS = [("accuracy", "accuracy"), ("kappa", "Cohen's κ"), ("precision", "precision"), ("recall", "recall"),
        ("f1", "F1"), ("roc_auc", "ROC-AUC"), ("average_precision", "AP"), ("tpr_at_1pct_fpr", "TPR@1%FPR"),
        ("tpr_at_0.1pct_fpr", "TPR@0.1%FPR")]

STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}.ci{color:#777;font-size:11px}.note{background:#f6f6f0;padding:.6em 1em;border-left:4px solid #cc9}
img{max-width:100%}.warn{color:#a33}
"""


def _img(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(Path(path).stem)}">'


def _fmt(v, ci=None) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "–"
    s = f"{v:.3f}"
    if ci and not np.isnan(ci[0]):
        s += f'<br><span class="ci">[{ci[0]:.2f}, {ci[1]:.2f}]</span>'
    return s


def verdict(name: str, r: dict) -> str:
    """A plain sentence on whether a detector beats chance on the development images."""
    auc = r["metrics"].get("roc_auc", float("nan"))
    lo, hi = r.get("intervals", {}).get("roc_auc", (float("nan"), float("nan")))
    if np.isnan(lo):
        return f"{name}: ROC-AUC {auc:.2f} (no interval computed)."
    if lo > 0.5:
        return f"{name}: ROC-AUC {auc:.2f} [{lo:.2f}, {hi:.2f}] — better than chance."
    if hi < 0.5:
        return f"{name}: ROC-AUC {auc:.2f} [{lo:.2f}, {hi:.2f}] — below chance: the score points the wrong way."
    return f"{name}: ROC-AUC {auc:.2f} [{lo:.2f}, {hi:.2f}] — not distinguishable from chance."


def write_report(out: Path, reals, generated, scores, evaluation, model, cfg, run_decision: str | None = None) -> Path:
    """Write ``out/report.html`` and its figures (also kept as PNG in ``out/figures``)."""
    fig = out / "figures"
    parts = [f"<h1>vitprint membership report</h1><p>{datetime.datetime.now():%Y-%m-%d %H:%M} · "
             f"{len(generated)} generated images · {len(reals.images)} real images · "
             f"detectors: {', '.join(scores.values)}</p>"]
    if run_decision:
        parts.append(f"<p>Run file <code>run.txt</code>: {html.escape(run_decision)}.</p>")
    labelled = reals.labels >= 0
    if evaluation is not None:
        res = evaluation["results"]
        y = reals.labels[labelled]
        parts.append("<h2>How well each detector separates used from not-used images</h2>"
                     f"<p>Development images: {int((y == 1).sum())} used, {int((y == 0).sum())} not used. "
                     f"Decisions are {cfg.folds}-fold cross-validated: every image is decided by a threshold "
                     "(and combiner) fitted on the other folds. Brackets: bootstrap 95% intervals.</p>")
        head = "".join(f"<th>{h}</th>" for _, h in KEYS)
        rows = "".join(
            f"<tr><td>{html.escape(n)}</td>" + "".join(f"<td>{_fmt(r['metrics'].get(k), r['intervals'].get(k))}</td>" for k, _ in KEYS) + "</tr>"
            for n, r in res.items())
        parts.append(f"<table><tr><th>detector</th>{head}</tr>{rows}</table>")
        parts.append('<div class="note"><ul>' + "".join(f"<li>{html.escape(verdict(n, r))}</li>" for n, r in res.items()) + "</ul></div>")
        curves = {n: roc_curve(y, s)[:2] for n, s in evaluation["cv_scores"].items()}
        parts.append("<h2>ROC curves</h2><p>The log-axis view shows whether any used image is identified "
                     "confidently, at a low false-positive rate.</p>")
        parts.append(_img(plots.roc_curves(curves, fig / "roc.png")) + _img(plots.roc_curves(curves, fig / "roc_log.png", log=True)))
        parts.append("<h2>Score distributions</h2>" + _img(plots.score_histograms(evaluation["cv_scores"], y, fig / "histograms.png")))
        parts.append("<h2>Member-vs-member control</h2><p>The used images are split into random halves and "
                     "scored as if one half had not been used. Both halves were in the training set, so a "
                     "detector that measures membership gives an AUC near 0.5 here. An AUC far from 0.5 means "
                     "the detector responds to something else (how the images were chosen or split), and its "
                     "development figures should not be trusted.</p>")
        crow = "".join(
            f"<tr><td>{html.escape(n)}</td><td>{r['control']['auc_mean']:.3f}</td>"
            f"<td>[{r['control']['auc_low']:.2f}, {r['control']['auc_high']:.2f}]</td></tr>" for n, r in res.items())
        parts.append(f"<table><tr><th>detector</th><th>mean AUC, member vs member</th><th>95% of splits</th></tr>{crow}</table>")
        suspicion = evaluation["cv_scores"]["combined"]
        order_idx = np.flatnonzero(labelled)
    else:
        name = cfg.decision if cfg.decision in scores.values else next(iter(scores.values))
        suspicion = scores.values[name]
        order_idx = np.arange(len(reals.images))
        parts.append(f"<p>No labelled development images: the ranking below uses {html.escape(name)}.</p>")

    # Evidence: the most suspicious real images next to their nearest generated image.
    nn_name = "pixel_nn" if "pixel_nn" in scores.nearest else next(iter(scores.nearest), None)
    top = order_idx[np.argsort(-suspicion)[:8]]
    if nn_name is not None:
        nearest = scores.nearest[nn_name][top]
        caps = [f"{reals.groups[i].replace('_', '-')}\n{Path(reals.images.ids[i]).stem}" for i in top]
        parts.append(f"<h2>Most suspicious real images and their nearest generated image ({nn_name})</h2>"
                     "<p>Top row: the real images ranked most likely used. Bottom row: the generated image "
                     "nearest to each. A near-copy is direct evidence of memorisation.</p>")
        parts.append(_img(plots.image_pairs(np.asarray(reals.images.pixels[top]), np.asarray(generated.pixels[nearest]),
                                            fig / "evidence.png", titles=("real", "nearest generated"), captions=caps)))
    if model is not None:
        show = []
        for g in ("member", "non_member", "unknown"):
            show += list(np.flatnonzero(reals.groups == g)[:4])
        sub = subset(reals.images, show)
        rec = reconstruct(model, sub, keep=True, progress=False)
        caps = [f"{reals.groups[i].replace('_', '-')}\nmse {m:.4f}" for i, m in zip(show, rec.mse)]
        parts.append("<h2>Reconstructions by the autoencoder trained on the generated images</h2>"
                     + _img(plots.image_pairs(sub.pixels, rec.images, fig / "reconstructions.png", captions=caps)))
    path = out / "report.html"
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>vitprint report</title>"
                    f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>")
    return path
