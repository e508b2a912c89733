"""Evaluating a run file or a scores file against the truth."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from vitprint.data.folders import list_images
from vitprint.errors import VitprintError
from vitprint.evaluation.metrics import binary_metrics, bootstrap_intervals
from vitprint.evaluation.runfile import parse_run
from vitprint.evaluation.verdict import confirm_out_of_fold, decide_verdict
from vitprint.membership.decisions import cross_validate, deciding_scores


def read_truth(source: str | Path) -> dict[str, int]:
    """``id -> 0/1`` from a development folder (``real_used/``, ``real_not_used/``) or a CSV ``id,label``.

    Ids are file stems; a CSV may give stems or file names (a header line is allowed).
    """
    src = Path(source)
    if src.is_dir():
        used, not_used = src / "real_used", src / "real_not_used"
        if not (used.is_dir() and not_used.is_dir()):
            raise VitprintError(f"{src} must hold real_used/ and real_not_used/ to serve as the truth")
        truth = {p.stem: 1 for p in list_images(used)}
        truth.update({p.stem: 0 for p in list_images(not_used)})
        return truth
    if not src.is_file():
        raise VitprintError(f"truth not found: {src}")
    truth = {}
    for n, row in enumerate(csv.reader(src.read_text().splitlines()), 1):
        if not row:
            continue
        if len(row) < 2 or row[1].strip() not in ("0", "1"):
            if n == 1:
                continue  # a header
            raise VitprintError(f"{src} line {n}: expected '<id>,<0|1>', got {','.join(row)!r}")
        truth[Path(row[0].strip()).stem] = int(row[1])
    if not truth:
        raise VitprintError(f"{src} holds no labels")
    return truth


def _match(ids: list[str], truth: dict[str, int], what: str) -> np.ndarray:
    stems = [Path(i).stem for i in ids]
    missing = [i for i in stems if i not in truth]
    if missing:
        raise VitprintError(f"{len(missing)} id(s) of the {what} are not in the truth (e.g. {missing[0]!r})")
    return np.asarray([truth[i] for i in stems])


def evaluate_run(run: str | Path, truth: dict[str, int], n_boot: int = 1000,
                 seed: int = 0) -> tuple[dict[str, Any], int]:
    """Metrics (with bootstrap intervals) of a run file's 0/1 decisions, and how many truth ids it misses."""
    ids, pred = parse_run(run)
    y = _match(ids, truth, "run file")
    missing = len(set(truth) - {Path(i).stem for i in ids})
    m = binary_metrics(y, pred)
    return {"run": {"metrics": m, "intervals": bootstrap_intervals(y, pred, None, n_boot, seed) if n_boot else {}}}, missing


def read_scores(path: str | Path) -> tuple[list[str], dict[str, np.ndarray], np.ndarray]:
    """Ids, score columns and labels (-1 where a row has none) of a ``scores.csv``."""
    path = Path(path)
    if not path.is_file():
        raise VitprintError(f"scores file not found: {path}")
    with path.open() as f:
        rows = list(csv.DictReader(f))
    if not rows or "id" not in rows[0]:
        raise VitprintError(f"{path} is not a vitprint scores file (no 'id' column)")
    score_cols = [c for c in rows[0] if c not in ("id", "group", "label", "path")]
    ids = [r["id"] for r in rows]
    values = {c: np.asarray([float(r[c]) for r in rows]) for c in score_cols}
    labels = np.asarray([int(r["label"]) if r.get("label") in ("0", "1") else -1 for r in rows])
    return ids, values, labels


def evaluate_scores(values: dict[str, np.ndarray], labels: np.ndarray, folds: int = 5, n_boot: int = 1000,
                    seed: int = 0, target_fpr: float | None = None, blind: dict | None = None,
                    candidates=None) -> dict[str, Any]:
    """Cross-validated metrics of every score, the combiner and the auto choice, with intervals,
    permutation p-values (Holm-corrected across detectors) and the verdict.

    Returns ``{"results": {name: {metrics, intervals[, p_value, p_holm]}}, "cv_scores": {name: scores},
    "auto_choices": [...], "combiner_choices": [...], "verdict": {...}}``.
    """
    cv = cross_validate(values, labels, folds, seed, target_fpr, candidates)
    tested = {n: values[n] for n in deciding_scores(list(values), candidates)}
    verdict, tests = decide_verdict(tested, labels, blind, seed=seed)
    out = {}
    for name, s in cv.scores.items():
        m = binary_metrics(labels, cv.decisions[name], s)
        out[name] = {"metrics": m,
                     "intervals": bootstrap_intervals(labels, cv.decisions[name], s, n_boot, seed) if n_boot else {}}
        if name in tests:
            out[name].update(p_value=tests[name]["p_value"], p_holm=tests[name]["p_holm"])
    confirm_out_of_fold(verdict, out["auto"]["metrics"]["roc_auc"])
    return {"results": out, "cv_scores": cv.scores, "cv_decisions": cv.decisions, "auto_choices": cv.auto_choices,
            "combiner_choices": cv.combiner_choices,
            "folds": cv.folds,
            "verdict": verdict.to_dict()}


RUN_KEYS = ("accuracy", "kappa", "precision", "recall", "f1")
SCORE_KEYS = ("accuracy", "kappa", "f1", "roc_auc", "tpr_at_1pct_fpr")


def evaluate_file(run: str | Path | None = None, scores: str | Path | None = None, truth: str | Path | None = None,
                  folds: int = 5, n_boot: int = 1000, seed: int = 0,
                  target_fpr: float | None = None) -> dict[str, Any]:
    """Evaluate exactly one of a run file (against ``truth``) or a ``scores.csv`` (its own labels, or
    ``truth``'s). Returns ``{"results": {name: {metrics, intervals, ...}}, "keys": the metrics worth
    printing, "verdict": ... (scores only), "missing": truth ids the run file has no line for}``."""
    if (run is None) == (scores is None):
        raise VitprintError("give exactly one run file or one scores file to evaluate")
    labels_from = read_truth(truth) if truth else None
    if run is not None:
        if labels_from is None:
            raise VitprintError("evaluating a run file needs the truth (a development folder or an id,label CSV)")
        results, missing = evaluate_run(run, labels_from, n_boot, seed)
        return {"results": results, "keys": RUN_KEYS, "missing": missing}
    ids, values, labels = read_scores(scores)
    if labels_from is not None:
        labels = np.asarray([labels_from.get(Path(i).stem, -1) for i in ids])
    keep = labels >= 0
    if not keep.any():
        raise VitprintError(f"no row of {scores} has a label; give the truth (a development folder or an id,label CSV)")
    held = held_from_verdict(Path(scores), list(values))
    candidates = [n for n in values if n not in held]
    evaluation = evaluate_scores({k: v[keep] for k, v in values.items()}, labels[keep], folds, n_boot, seed, target_fpr,
                                 candidates=candidates)
    return {"results": evaluation["results"], "keys": SCORE_KEYS, "verdict": evaluation["verdict"], "missing": 0,
            "not_for_verdict": sorted(held)}


def held_from_verdict(scores: Path, names: list[str]) -> set[str]:
    """The score columns that may not be tested for a verdict nor combined: as ``detect`` recorded them in the
    ``evaluation.json`` beside the scores file, or else (a file without it) every ``_cal`` score (it may have
    been cross-fitted against a reference holding scored images' neighbours) and every supervised one."""
    from vitprint.membership.registry import detector_class

    beside = scores.with_name("evaluation.json")
    if beside.is_file():
        try:
            return set(json.loads(beside.read_text()).get("not_for_verdict", [])) & set(names)
        except (OSError, ValueError):
            pass  # unreadable: the cautious rule below

    def supervised(name: str) -> bool:
        try:
            return bool(detector_class(name).supervised)
        except VitprintError:  # a column no detector of this version makes
            return False

    return {n for n in names if n.endswith("_cal") or supervised(n)}
