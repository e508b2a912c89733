"""One self-contained HTML report per detection run (every figure embedded)."""

from __future__ import annotations

import base64
import datetime
import html
import json
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


def _verdict_block(summary: dict) -> str:
    v = summary.get("verdict")
    if not v:
        return ('<div class="note"><b>Not assessed</b>: no labelled development images (used and not used), so no '
                "detector could be checked against the truth here.</div>")
    colour = {"Leak detected": "#a33", "Inconclusive": "#a70"}.get(v["verdict"], "#363")
    parts = [f'<div class="note" style="border-color:{colour}"><b style="color:{colour}">{html.escape(v["verdict"])}</b>'
             f"<br>{html.escape(v['sentence'])}"]
    est = summary.get("leak_estimate")
    if est and v["verdict"] == "Leak detected":
        parts.append(f"<br>How much leaked: about {est['count']:.0f} of the {est['used']} used images "
                     f"[{est['count_low']:.0f}, {est['count_high']:.0f}] score above the 99th percentile of the not-used "
                     f"images by {html.escape(est['detector'])} (beyond the 1% expected by chance).")
    b = summary.get("blind_baseline")
    if b:
        parts.append(f"<br>Blind baseline (used vs not used from the real images alone, no generated image): "
                     f"ROC-AUC {b['auc']:.2f} [{b['auc_low']:.2f}, {b['auc_high']:.2f}]"
                     + (" — the split is confounded; detectors are read against this, not against 0.5."
                        if b["auc_low"] > 0.5 else " — no sign that the split itself is confounded."))
    if summary.get("cross_fitted"):
        parts.append("<br>Cross-fitted: " + ", ".join(f"{html.escape(k)} ({n} images)" for k, n in summary["cross_fitted"].items())
                     + " — real images that are also in the reference set were scored against a reference without them.")
    return "".join(parts) + "</div>"


def write_report(out: Path, reals, generated, scores, evaluation, model, cfg, run_decision: str | None = None,
                 summary: dict | None = None, full_resolution=None) -> Path:
    """Write ``out/report.html`` and its figures (also kept as PNG in ``out/figures``)."""
    fig = out / "figures"
    summary = summary or {}
    peers = set(scores.peers)
    parts = [f"<h1>vitprint membership report</h1><p>{datetime.datetime.now():%Y-%m-%d %H:%M} · "
             f"{len(generated)} generated images · {len(reals.images)} real images · "
             f"detectors: {', '.join(scores.values)}</p>", _verdict_block(summary)]
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
        head = "".join(f"<th>{h}</th>" for _, h in KEYS) + "<th>p (Holm)</th>"
        n0 = int((y == 0).sum())
        too_few = {"tpr_at_1pct_fpr": 100, "tpr_at_0.1pct_fpr": 1000}  # not-used images a 1% / 0.1% FPR needs

        def cell(r, k):
            if k in too_few and n0 < too_few[k]:
                return f'<td>–<br><span class="ci">needs ≥ {too_few[k]:,} not-used images</span></td>'
            return f"<td>{_fmt(r['metrics'].get(k), r['intervals'].get(k))}</td>"

        rows = "".join(
            f"<tr><td>{html.escape(n)}{' (peer)' if n in peers else ''}</td>"
            + "".join(cell(r, k) for k, _ in KEYS)
            + (f"<td>{r['p_holm']:.3g}</td>" if "p_holm" in r else "<td>–</td>") + "</tr>"
            for n, r in res.items())
        parts.append(f"<table><tr><th>detector</th>{head}</tr>{rows}</table>")
        parts.append(_glossary() + _in_words(summary, res, y))
        curves = {n: roc_curve(y, s)[:2] for n, s in evaluation["cv_scores"].items()}
        parts.append("<h2>ROC curves</h2><p>The log-axis view shows whether any used image is identified "
                     "confidently, at a low false-positive rate.</p>")
        parts.append(_img(plots.roc_curves(curves, fig / "roc.png")) + _img(plots.roc_curves(curves, fig / "roc_log.png", log=True)))
        parts.append("<h2>Score distributions</h2>" + _img(plots.score_histograms(evaluation["cv_scores"], y, fig / "histograms.png")))
        parts.append("<p>p (Holm): the chance of an ROC-AUC this high if the labels were shuffled (2,000 "
                     "permutations), corrected for testing every detector. <i>auto</i> is the detector chosen on the "
                     "training folds; <i>combined</i> a regularised logistic combination. Peers are the literature's "
                     "methods, implemented from their papers.</p>")
    parts.append(_evidence(reals, generated, scores, summary, fig, full_resolution))
    if model is not None:
        show = []
        for g in ("member", "non_member", "unknown"):
            show += list(np.flatnonzero(reals.groups == g)[:4])
        sub = subset(reals.images, show)
        rec = reconstruct(model, sub, keep=True, progress=False)
        caps = [f"{reals.groups[i].replace('_', '-')}\nmse {m:.4f}" for i, m in zip(show, rec.mse)]
        parts.append("<h2>Reconstructions by the autoencoder trained on the generated images</h2>"
                     + _img(plots.image_pairs(sub.pixels, rec.images, fig / "reconstructions.png", captions=caps)))
    parts.append(_reproduction(summary))
    path = out / "report.html"
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>vitprint report</title>"
                    f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>")
    return path


def _evidence(reals, generated, scores, summary: dict, fig: Path, full_resolution=None) -> str:
    """The most suspicious real images (every role) beside their nearest generated image, by one named detector."""
    primary = (summary.get("run_decision_rule") or {}).get("primary") or summary.get("verdict", {}).get("primary")
    name = primary if primary in scores.nearest else next((n for n in ("align_nn", "copy_nn", "pixel_nn")
                                                           if n in scores.nearest), next(iter(scores.nearest), None))
    if name is None:
        return ""
    s = scores.values[name]
    top = np.argsort(-s)[:8]
    nearest = scores.nearest[name][top]
    labels = reals.labels
    bar = None
    if (labels == 0).any():
        bar = float(np.quantile(s[labels == 0], 0.99))
    caps = []
    for i, j in zip(top, nearest):
        role = {"member": "used", "non_member": "NOT USED (false alarm)", "unknown": "unknown"}[reals.groups[i]]
        caps.append(f"{role}\n{Path(reals.images.ids[i]).stem}\n{name} {s[i]:.4f}\n{Path(generated.paths[j]).name}")
    above = int((s[top] > bar).sum()) if bar is not None else None
    text = (f"<h2>Evidence: the real images {html.escape(name)} ranks most likely used, beside their nearest "
            f"generated image</h2><p>Each caption: the image's role, its id, the {html.escape(name)} score and the "
            "generated file it matches. ")
    if bar is not None:
        text += (f"The bar for a near-copy: the 99th percentile of the not-used images' scores, {bar:.3f}. "
                 + (f"{above} of these {len(top)} pairs lie above it." if above else
                    "No pair lies above it: none of these is closer than a not-used image would be.") + "</p>")
    else:
        text += "No not-used images are labelled, so there is no measured bar for a near-copy.</p>"
    real_px, gen_px = np.asarray(reals.images.pixels[top]), np.asarray(generated.pixels[nearest])
    if full_resolution is not None:  # the pairs as the files hold them, not at the model's size
        real_px = full_resolution([reals.images.paths[i] for i in top], real_px)
        gen_px = full_resolution([generated.paths[j] for j in nearest], gen_px)
    return text + _img(plots.image_pairs(real_px, gen_px, fig / "evidence.png", titles=("real", "nearest generated"),
                                         captions=caps))


def _glossary() -> str:
    lines = [
        ("accuracy", "share of images decided correctly (0.5 is a coin toss when both groups are equal)"),
        ("Cohen's κ", "agreement with the truth beyond chance: 0 is chance, 1 perfect"),
        ("precision", "of the images called used, the share that were used"),
        ("recall", "of the used images, the share called used"),
        ("F1", "the balance of precision and recall"),
        ("ROC-AUC", "the chance that a used image scores above a not-used one, whatever the threshold (0.5 = chance)"),
        ("AP", "average precision over every threshold"),
        ("TPR@1%FPR", "used images found when at most 1% of not-used images may be called used (the confident "
                      "calls an auditor can stand behind)"),
    ]
    return "<ul class='ci'>" + "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in lines) + "</ul>"


def _in_words(summary: dict, res: dict, y) -> str:
    rule = summary.get("run_decision_rule") or {}
    row = "auto" if summary.get("decision") == "auto" else summary.get("decision")
    r = res.get(row)
    if not r:
        return ""
    m = r["metrics"]
    return (f"<p>In words ({html.escape(str(row))}, cross-validated): of the {m['tp'] + m['fn']} used images, "
            f"{m['tp']} were called used and {m['fn']} missed; of the {m['tn'] + m['fp']} not-used images, "
            f"{m['fp']} were wrongly called used (false alarms) and {m['tn']} correctly cleared."
            + (f" The run file's rule: {html.escape(str(rule.get('primary')))} above "
               f"{rule['threshold']:.4g}." if "threshold" in rule else "") + "</p>")


def _reproduction(summary: dict) -> str:
    rep = summary.get("reproduction")
    if not rep:
        return ""
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v['images']}</td><td>{html.escape(', '.join(v['folders']))}</td>"
                   f"<td><code>{v['pixels_sha1']}</code></td></tr>" for k, v in rep["inputs"].items())
    rule = summary.get("run_decision_rule") or {}
    return ("<h2>Reproduction</h2>"
            f"<p>vitprint {html.escape(str(rep['vitprint']))}; command: <code>{html.escape(str(rep.get('command')))}</code></p>"
            f"<table><tr><th>role</th><th>images</th><th>folders</th><th>pixels SHA-1</th></tr>{rows}</table>"
            f"<p>Model {html.escape(rep['model']['vit'])} at {rep['model']['image_size']} px; detectors "
            f"{html.escape(', '.join(rep['detectors']))} (options {html.escape(json.dumps(rep['detector_options']))}); "
            f"decision {html.escape(str(rep['decision']))}; seed {rep['seed']}; {rep['folds']} folds; "
            f"{rep['bootstrap']} bootstrap resamples. Fitted rule: <code>{html.escape(json.dumps(rule))}</code> "
            "(also in evaluation.json).</p>")
