"""From scores to an assessment: cross-validated metrics, controls, the verdict, how much leaked,
and a decision for every real image. Shared by the command-line job and the Python API."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from vitprint.errors import VitprintError
from vitprint.evaluation.truth import evaluate_scores
from vitprint.evaluation.verdict import INCONCLUSIVE, LEAK, NO_EVIDENCE, blind_baseline, leak_estimate
from vitprint.membership.decisions import DECISIONS, fit_decision

log = logging.getLogger(__name__)


@dataclass
class AssessConfig:
    folds: int = 5
    n_boot: int = 1000
    seed: int = 0
    target_fpr: float | None = None
    decision: str = "auto"
    assume_prevalence: float | None = None


def assess(values: dict[str, np.ndarray], labels, unknown, pixels, cfg: AssessConfig = AssessConfig(),
           not_for_verdict=()):
    """``(evaluation or None, summary entries, Decided)`` for real images with labels 1/0 (-1 = unknown).

    ``pixels`` are the real images (the blind baseline reads the labelled ones). Scores named in
    ``not_for_verdict`` (those that cross-fitted some real images against a reference holding their
    neighbours) are reported but neither tested for the verdict nor chosen by ``auto``: a held-out image
    and its neighbouring slices in the reference would make it look unlike the generated set for a
    reason that has nothing to do with the generator.
    """
    labels = np.asarray(labels)
    labelled = labels >= 0
    unknown = np.asarray(unknown, bool)
    allowed = [*DECISIONS, *values]
    if cfg.decision not in allowed:
        raise VitprintError(f"decision must be one of {', '.join(allowed)}, got {cfg.decision!r}")
    summary: dict[str, Any] = {}
    evaluation = None
    candidates = [n for n in values if n not in set(not_for_verdict)]
    if not candidates and (labels >= 0).any():
        raise VitprintError(f"none of the scores ({', '.join(values)}) can be tested for a verdict: each was learnt "
                            "from the labels or cross-fitted against a reference that holds scored images; add a "
                            "detector that uses neither (align_nn, pixel_nn, copy_nn, ...)", "detectors")
    if not_for_verdict:
        summary["not_for_verdict"] = sorted(set(not_for_verdict) & set(values))
    y = labels[labelled]
    if labelled.any() and min((y == 0).sum(), (y == 1).sum()) >= 2:
        feats = {n: v[labelled] for n, v in values.items()}
        # The verdict reads the blind baseline's interval, so it is always bootstrapped (a cheap AUC per draw).
        blind = blind_baseline(np.asarray(pixels)[labelled], y, cfg.folds, cfg.seed, max(cfg.n_boot, 200))
        evaluation = evaluate_scores(feats, y, cfg.folds, cfg.n_boot, cfg.seed, cfg.target_fpr, blind, candidates)
        primary = evaluation["verdict"]["primary"]
        summary.update(verdict=evaluation["verdict"], blind_baseline=blind, development=evaluation["results"],
                       auto_choices=evaluation["auto_choices"],
                       combiner_choices=evaluation["combiner_choices"], folds_used=evaluation["folds"],
                       leak_estimate={"detector": primary,
                                      **leak_estimate(feats[primary], y, n_boot=cfg.n_boot, seed=cfg.seed)})
        log.info("verdict: %s", evaluation["verdict"]["sentence"])
    elif labelled.any():
        log.warning("the labelled images need at least 2 used and 2 not-used ones to be assessed; they are not")
    decided = decide_all(values, labels, unknown, evaluation, cfg, candidates)
    verdict = evaluation["verdict"]["verdict"] if evaluation is not None else None
    if decided.sentence and verdict not in (None, LEAK):
        # The run file must answer every image, but calls made without a leak found must not read as findings.
        why = {NO_EVIDENCE: "no detector separated the development images beyond chance",
               INCONCLUSIVE: "the real images alone give the groups away, so a score may follow that, not the "
                             "generator"}.get(verdict, "it was not assessed")
        decided.sentence += f". The verdict is \"{verdict}\" ({why}): read these calls as guesses, not findings"
    summary["run_decision_rule"] = decided.rule
    if unknown.any():
        summary["run_decision"] = decided.sentence
        summary["expected_false_positives"] = decided.expected_false_positives
    return evaluation, summary, decided


@dataclass
class Decided:
    """Per real image: the score that decides, P(used), the 0/1 decision (labelled images out-of-fold)."""

    primary: str
    score: np.ndarray
    p_used: np.ndarray
    labels: np.ndarray
    rule: dict
    sentence: str = ""
    expected_false_positives: float = float("nan")


def _platt(train_s, train_y, s) -> np.ndarray:
    m = LogisticRegression(C=1.0).fit(np.asarray(train_s, float)[:, None], train_y)
    return m.predict_proba(np.asarray(s, float)[:, None])[:, 1]


def _out_of_fold_platt(scores, y, folds: int, seed: int) -> np.ndarray:
    folds = max(2, min(folds, int(min((y == 0).sum(), (y == 1).sum()))))
    return cross_val_predict(LogisticRegression(C=1.0), np.asarray(scores, float)[:, None], y,
                             cv=StratifiedKFold(folds, shuffle=True, random_state=seed), method="predict_proba")[:, 1]


def decide_all(values, labels, unknown, evaluation, cfg: AssessConfig, candidates=None) -> Decided:
    """Decide every real image: labelled ones out-of-fold (as in the metrics), unknown ones by the rule
    fitted on all labelled images, or by an assumed prevalence when there are no labels."""
    labels_all = np.asarray(labels)
    labelled = labels_all >= 0
    n = len(labels_all)
    y = labels_all[labelled]
    if evaluation is not None:
        fitted = fit_decision({k: v[labelled] for k, v in values.items()}, y, cfg.decision, cfg.target_fpr, cfg.seed,
                              candidates)
        score = fitted.decision_function(values)
        decisions = fitted.predict(values)
        row = "combined" if fitted.combiner is not None else ("auto" if cfg.decision == "auto" else fitted.primary)
        decisions[labelled] = evaluation["cv_decisions"][row]
        p_used = _platt(score[labelled], y, score)
        # Labelled images: P(used) out of fold, like their decisions.
        p_used[labelled] = _out_of_fold_platt(evaluation["cv_scores"][row], y, cfg.folds, cfg.seed)
        # The false-positive rate the rule shows out of fold (in-sample it would flatter itself).
        dev_fpr = float(evaluation["cv_decisions"][row][y == 0].mean())
        what = (f"the combiner ({fitted.combiner.kept(fitted.names)})" if fitted.combiner is not None
                else fitted.primary)
        d = Decided(fitted.primary, score, p_used, decisions, fitted.to_dict())
        n_unknown = int(unknown.sum())
        if n_unknown:
            share_not_used = float((y == 0).mean())
            d.expected_false_positives = dev_fpr * n_unknown * share_not_used
            d.sentence = (f"{int(decisions[unknown].sum())} of {n_unknown} unknown images called used by {what} "
                          f"(threshold {fitted.threshold:.4g} fitted on {int(labelled.sum())} development images; "
                          f"its false-positive rate there {dev_fpr:.1%}, so about {d.expected_false_positives:.1f} "
                          f"of these calls would be false alarms if the unknown images are like the development ones)")
        return d
    if cfg.assume_prevalence is None:
        raise VitprintError("no labelled development images to fit a decision: give used and not-used images "
                            "(members and non-members), or state the expected share of used images (an assumed "
                            "prevalence)", ("members", "non_members", "assume_prevalence"))
    name = cfg.decision if cfg.decision in values else (candidates or list(values))[0]
    if cfg.decision not in values:
        log.warning("no labels to choose a detector with: deciding by %s (name one with --decision)", name)
    score = np.asarray(values[name], float)
    t = float(np.quantile(score[unknown], 1 - cfg.assume_prevalence))
    decisions = (score > t).astype(int)
    ranks = np.argsort(np.argsort(score)) / max(n - 1, 1)
    d = Decided(name, score, ranks, decisions, {"primary": name, "threshold": t,
                                                "assumed_prevalence": cfg.assume_prevalence})
    d.sentence = (f"{int(decisions[unknown].sum())} of {int(unknown.sum())} unknown images called used: the top "
                  f"{cfg.assume_prevalence:.0%} by {name} (assumed prevalence, no labels; not a measured threshold)")
    return d


