"""What a detection found, in memory, and how it is written to a folder."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from vitprint.data.outputs import replaced_outputs
from vitprint.data.runlock import run_lock
from vitprint.evaluation.report import Evidence, select_evidence, write_report
from vitprint.evaluation.runfile import run_id, write_run
from vitprint.membership.regions import best_region

log = logging.getLogger(__name__)

ROLES = {1: "member", 0: "non_member", -1: "unknown"}
OUTPUTS = ("scores.csv", "decisions.csv", "run.txt", "evaluation.json", "report.html", "figures")  # one set per job


@dataclass
class DetectionResult:
    """Everything ``detect`` found: per real image its scores, nearest generated image, decision and
    P(used); cross-validated metrics with intervals and the verdict in ``summary``.

    ``paths`` name the real images (their files, or ids for arrays); ``real_pixels`` and
    ``generated_pixels`` are the images as scored, kept for the report's evidence.
    """

    ids: list[str]
    paths: list[str]
    labels: np.ndarray  # 1 used, 0 not used, -1 unknown
    scores: dict[str, np.ndarray]
    nearest: dict[str, np.ndarray]  # detector -> index of the nearest generated image
    generated_paths: list[str]
    score: np.ndarray  # the score that decides (the primary detector's, or the combiner's)
    decisions: np.ndarray  # 0/1 per real image (labelled ones out-of-fold)
    p_used: np.ndarray
    primary: str
    peers: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    cv_scores: dict[str, np.ndarray] = field(default_factory=dict)  # labelled images' out-of-fold scores
    real_pixels: np.ndarray | None = field(default=None, repr=False)
    generated_pixels: np.ndarray | None = field(default=None, repr=False)
    undecided: list[str] = field(default_factory=list)  # unknown images that could not be read: 0 in the run file

    @classmethod
    def assemble(cls, *, ids, paths, labels, scores, generated_paths, decided, summary, evaluation,
                 real_pixels, generated_pixels, nearest=None, undecided=()) -> "DetectionResult":
        """A result from the scoring (``Scores``) and the assessment (``Decided`` and the evaluation, None
        without labels); ``nearest`` overrides the scores' nearest-generated indices (after a dedupe)."""
        return cls(ids=unique_ids(list(ids), labels), paths=list(paths), labels=np.asarray(labels),
                   scores=scores.values, nearest=scores.nearest if nearest is None else nearest,
                   generated_paths=list(generated_paths), score=decided.score, decisions=decided.labels,
                   p_used=decided.p_used, primary=decided.primary, peers=scores.peers, summary=summary,
                   cv_scores=evaluation["cv_scores"] if evaluation else {}, real_pixels=np.asarray(real_pixels),
                   generated_pixels=np.asarray(generated_pixels), undecided=list(undecided))

    @property
    def verdict(self) -> dict[str, Any] | None:
        return self.summary.get("verdict")

    @property
    def metrics(self) -> dict[str, Any]:
        """Cross-validated metrics with 95% intervals per detector (empty without labels)."""
        return self.summary.get("development", {})

    @property
    def roles(self) -> np.ndarray:
        return np.asarray([ROLES[int(v)] for v in self.labels])

    @property
    def nearest_by(self) -> str | None:
        """The detector whose nearest generated image is shown as evidence for a decision."""
        return self.primary if self.primary in self.nearest else next(iter(self.nearest), None)

    def run_ids(self, names: bool = False) -> list[str]:
        """Each real image's id in a run file: its stem or, with ``names``, its file name."""
        return [run_id(p, names) for p in self.paths]


    def save(self, out: str | Path, run_names: bool = False, report: bool = False,
             check_run: Callable[[Path], list[str]] | None = None, **report_parts) -> Path:
        """Write ``scores.csv``, ``decisions.csv``, ``run.txt`` (for unknown images), ``evaluation.json``
        and, with ``report``, ``report.html`` and ``figures/`` (``report_parts`` go to ``write_report``).

        The files replace those of an earlier job in ``out`` as one set (``replaced_outputs``), under the
        folder's lock; an old output the new set lacks is removed. ``check_run`` sees the new run file
        before anything is replaced: problems it returns stop the save with the old set intact.
        """
        out = Path(out)
        ids, roles, run_ids = self.ids, self.roles, self.run_ids(run_names)
        label = ["" if v < 0 else int(v) for v in self.labels]
        by = self.nearest_by
        with run_lock(out), replaced_outputs(out, OUTPUTS) as stage:
            with open(stage / "scores.csv", "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["id", "group", "label", "path", *self.scores])
                for i in range(len(ids)):
                    w.writerow([ids[i], roles[i], label[i], self.paths[i],
                                *(f"{v[i]:.6g}" for v in self.scores.values())])
            with open(stage / "decisions.csv", "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["id", "role", "label", "score", "p_used", "decision", "nearest_generated", "nearest_by"])
                for i in range(len(ids)):
                    near = self.generated_paths[self.nearest[by][i]] if by else ""
                    w.writerow([ids[i], roles[i], label[i], f"{self.score[i]:.6g}", f"{self.p_used[i]:.4f}",
                                int(self.decisions[i]), near, by or ""])
            unknown = self.labels < 0
            if unknown.any() or self.undecided:
                # An unknown image that could not be read is still answered: "0", no evidence it was used.
                write_run(stage / "run.txt", [run_ids[i] for i in np.flatnonzero(unknown)]
                          + [run_id(p, run_names) for p in self.undecided],
                          [*self.decisions[unknown], *[0] * len(self.undecided)], names=True)
            if check_run is not None and (stage / "run.txt").is_file():
                problems = check_run(stage / "run.txt")
                if problems:
                    raise RuntimeError(f"the run file does not pass the validator: {'; '.join(problems[:3])}")
            self.summary.pop("report", None)
            if report:
                parts = dict(report_parts)
                if "evidence" not in parts:
                    parts["evidence"] = with_regions(select_evidence(self))
                write_report(self, stage, **parts)
                self.summary["report"] = str(out / "report.html")
            (stage / "evaluation.json").write_text(json.dumps(self.summary, indent=2, default=float))
        return out


def unique_ids(ids: list[str], labels) -> list[str]:
    """Ids unique within a job: an id that two roles share (``zz`` used and ``zz`` unknown) gets its role
    as a prefix (``member/zz``, ``unknown/zz``) in the tables, said once. Run files keep file stems."""
    roles = [ROLES[int(v)] for v in labels]
    count: dict[str, set[str]] = {}
    for i, r in zip(ids, roles):
        count.setdefault(i, set()).add(r)
    shared = {i for i, r in count.items() if len(r) > 1}
    if not shared:
        return list(ids)
    log.warning("%d id(s) name images in more than one role (e.g. %r); in scores.csv and decisions.csv they are "
                "prefixed with the role", len(shared), sorted(shared)[0])
    return [f"{r}/{i}" if i in shared else i for i, r in zip(ids, roles)]


def with_regions(evidence: Evidence | None) -> Evidence | None:
    """The evidence pairs with their best-matching regions (real crop, aligned generated crop, caption)."""
    if evidence is None:
        return None
    regions = []
    for real, gen in zip(np.asarray(evidence.real_pixels), np.asarray(evidence.generated_pixels)):
        region = best_region(real, gen)
        a, b = region.crops(real, gen)
        regions.append((a, b, f"local r {region.ncc:.2f}"))
    return dataclasses.replace(evidence, regions=regions)
