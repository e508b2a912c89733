"""One self-contained HTML report per detection run (every figure embedded)."""

from __future__ import annotations

import base64
import datetime
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_curve

from vitprint.data.imageset import atomic_write
from vitprint.evaluation import plots

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


@dataclass
class Evidence:
    """Real images beside their nearest generated image, as one detector pairs them."""

    detector: str
    real_index: np.ndarray
    generated_index: np.ndarray
    real_pixels: np.ndarray
    generated_pixels: np.ndarray
    regions: list[tuple[np.ndarray, np.ndarray, str]] = field(default_factory=list)  # (real crop, generated crop, caption)


@dataclass
class ReconstructionPanel:
    """Some real images and what an autoencoder made of them, with one caption each."""

    inputs: np.ndarray
    outputs: np.ndarray
    captions: list[str]


def select_evidence(result, k: int = 8) -> Evidence | None:
    """The ``k`` real images (every role) a detector ranks most likely used, with their nearest generated
    image: the primary detector's pairs where it has them, else a copy detector's."""
    primary = (result.summary.get("run_decision_rule") or {}).get("primary") or result.primary
    name = primary if primary in result.nearest else next(
        (n for n in ("align_nn", "copy_nn", "pixel_nn") if n in result.nearest), next(iter(result.nearest), None))
    if name is None or result.real_pixels is None or result.generated_pixels is None:
        return None
    top = np.argsort(-result.scores[name])[:k]
    nearest = result.nearest[name][top]
    return Evidence(name, top, nearest, np.asarray(result.real_pixels[top]), np.asarray(result.generated_pixels[nearest]))


def write_report(result, out: Path, evidence: Evidence | None = None,
                 reconstructions: ReconstructionPanel | None = None) -> Path:
    """Write ``out/report.html`` (every figure embedded; also kept as PNG in ``out/figures``) for a
    ``DetectionResult``. ``evidence`` defaults to ``select_evidence(result)``; nothing is computed here
    beyond what is drawn."""
    out = Path(out)
    fig = out / "figures"
    summary = result.summary
    labels = np.asarray(result.labels)
    peers = set(result.peers)
    parts = [f"<h1>vitprint membership report</h1><p>{datetime.datetime.now():%Y-%m-%d %H:%M} · "
             f"{summary.get('generated', len(result.generated_paths))} generated images · {len(labels)} real images · "
             f"detectors: {', '.join(result.scores)}</p>", _verdict_block(summary)]
    for line in summary.get("set_up", []):
        parts.append(f"<p>{html.escape(line)}</p>")
    if summary.get("run_decision"):
        parts.append(f"<p>Run file <code>run.txt</code>: {html.escape(summary['run_decision'])}.</p>")
    if summary.get("undecided"):
        files = summary["undecided"]["files"]
        parts.append(f'<p class="warn">{len(files)} unknown image(s) could not be read and are answered 0 (no '
                     f"evidence of use) in the run file: {html.escape(', '.join(Path(f).name for f in files[:20]))}"
                     + (" …" if len(files) > 20 else "") + ".</p>")
    res = summary.get("development")
    if res:
        y = labels[labels >= 0]
        parts.append("<h2>How well each detector separates used from not-used images</h2>"
                     f"<p>Development images: {int((y == 1).sum())} used, {int((y == 0).sum())} not used. "
                     f"Decisions are {summary.get('folds_used', 'k')}-fold cross-validated: every image is decided by "
                     "a threshold (and combiner) fitted on the other folds. Brackets: bootstrap 95% intervals.</p>")
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
        if result.cv_scores:
            curves = {n: roc_curve(y, s)[:2] for n, s in result.cv_scores.items()}
            parts.append("<h2>ROC curves</h2><p>The log-axis view shows whether any used image is identified "
                         "confidently, at a low false-positive rate.</p>")
            parts.append(_img(plots.roc_curves(curves, fig / "roc.png"))
                         + _img(plots.roc_curves(curves, fig / "roc_log.png", log=True)))
            parts.append("<h2>Score distributions</h2>"
                         + _img(plots.score_histograms(result.cv_scores, y, fig / "histograms.png")))
        parts.append("<p>p (Holm): the chance of an ROC-AUC this high if the labels were shuffled (2,000 "
                     "permutations), corrected for testing every detector. <i>auto</i> is the detector chosen on the "
                     "training folds; <i>combined</i> the best single score or a regularised logistic combination of "
                     "the scores the verdict may test, whichever wins an inner cross-validation on the training folds. Peers are the literature's methods, implemented from their papers.</p>")
    parts.append(_evidence(result, evidence or select_evidence(result), fig))
    if reconstructions is not None:
        parts.append("<h2>Reconstructions by the autoencoder trained on the generated images</h2>"
                     + _img(plots.image_pairs(reconstructions.inputs, reconstructions.outputs,
                                              fig / "reconstructions.png", captions=reconstructions.captions)))
    parts.append(_reproduction(summary))
    path = out / "report.html"
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>vitprint report</title>"
            f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>")
    atomic_write(path, lambda tmp: Path(tmp).write_text(page))
    return path


def _evidence(result, ev: Evidence | None, fig: Path) -> str:
    """The most suspicious real images beside their nearest generated image, by one named detector."""
    if ev is None:
        return ""
    name, s, labels = ev.detector, result.scores[ev.detector], np.asarray(result.labels)
    bar = float(np.quantile(s[labels == 0], 0.99)) if (labels == 0).any() else None
    caps = []
    for i, j in zip(ev.real_index, ev.generated_index):
        role = {1: "used", 0: "NOT USED (false alarm)", -1: "unknown"}[int(labels[i])]
        caps.append(f"{role}\n{Path(result.paths[i]).stem}\n{name} {s[i]:.4f}\n{Path(result.generated_paths[j]).name}")
    text = (f"<h2>Evidence: the real images {html.escape(name)} ranks most likely used, beside their nearest "
            f"generated image</h2><p>Each caption: the image's role, its id, the {html.escape(name)} score and the "
            "generated file it matches. ")
    if bar is not None:
        above = int((s[ev.real_index] > bar).sum())
        text += (f"The bar for a near-copy: the 99th percentile of the not-used images' scores, {bar:.3f}. "
                 + (f"{above} of these {len(ev.real_index)} pairs lie above it." if above else
                    "No pair lies above it: none of these is closer than a not-used image would be.") + "</p>")
    else:
        text += "No not-used images are labelled, so there is no measured bar for a near-copy.</p>"
    text += _img(plots.image_pairs(ev.real_pixels, ev.generated_pixels, fig / "evidence.png",
                                   titles=("real", "nearest generated"), captions=caps))
    if ev.regions:
        text += ("<h3>Best-matching regions</h3><p>For the same pairs: the window (a quarter of the image's side) "
                 "where the real image and the generated one, aligned, correlate most — generators often copy a "
                 "region rather than a whole slice. Caption: the local correlation (1 = identical detail).</p>"
                 + _img(plots.image_pairs(np.stack([r[0] for r in ev.regions]), np.stack([r[1] for r in ev.regions]),
                                          fig / "regions.png", titles=("real region", "generated region"),
                                          captions=[r[2] for r in ev.regions])))
    return text


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
