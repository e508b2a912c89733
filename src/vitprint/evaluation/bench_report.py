"""Markdown tables and plots of a membership benchmark's results."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from vitprint.data.imageset import atomic_write
from vitprint.evaluation import plots

COLUMNS = (("roc_auc", "ROC-AUC"), ("tpr_at_1pct_fpr", "TPR@1%FPR"), ("kappa", "κ"), ("accuracy", "accuracy"))


def _cell(v) -> str:
    m, lo, hi = v[0], v[1], v[2]
    if np.isnan(m):
        return "–"
    return f"{m:.3f}" if np.isnan(lo) else f"{m:.3f} [{lo:.2f}, {hi:.2f}]"


def chance_note(auc) -> str:
    lo, hi = auc[1], auc[2]
    if np.isnan(lo):
        return ""
    if lo <= 0.5 <= hi:
        return "no better than chance"
    return "better than chance" if lo > 0.5 else "below chance"


def combiner_check(summary, cells=()) -> list[str]:
    """One line per cell saying whether the combiner's mean AUC matches the best single detector's, and
    (from ``cells``, where they recorded it) what the combiner kept in each seed."""
    kept: dict[tuple[str, str], list[str]] = {}
    for c in cells:
        choice = c["detectors"].get("combined", {}).get("choice")
        if choice is not None:
            what = f"{choice.removeprefix('single: ')} alone" if choice.startswith("single: ") else "the regression"
            kept.setdefault((family_key(c), str(c["members"])), []).append(f"{what} (seed {c.get('seed', 0)})")
    lines = []
    for fam, by_size in summary.items():
        for size, by_det in sorted(by_size.items(), key=lambda kv: int(kv[0])):
            singles = {d: v["roc_auc"][0] for d, v in by_det.items() if d not in ("combined", "copy_rate")}
            best = max(singles, key=singles.get)
            comb = by_det["combined"]["roc_auc"][0]
            ok = comb >= singles[best] - 1e-9
            lines.append(f"- {fam}, {size} members: combined {comb:.3f} vs best single ({best}) {singles[best]:.3f} — "
                         + ("met" if ok else f"**not met** (short by {singles[best] - comb:.4f})")
                         + (f"; kept: {', '.join(kept[fam, size])}" if (fam, size) in kept else ""))
    return lines


LEAKING_COPY_RATE = 0.05  # a cell whose generator copies at least this share of its images is a leaking cell
LEAKING_MEMBERS = 0.25  # ... and at least this share of its members (where the cell recorded it)


def is_leaking(cell: dict) -> bool:
    """A cell with something to find: its generator copies at least ``LEAKING_COPY_RATE`` of its images
    and (where recorded; older cells did not) has near-copies of at least ``LEAKING_MEMBERS`` of its
    members. A generator collapsed onto one member copies often but leaves one member to find, and on
    held-out halves perhaps none."""
    if cell.get("null") or cell.get("copy_rate", 0) < LEAKING_COPY_RATE:
        return False
    return cell.get("members_copied", cell["members"]) >= LEAKING_MEMBERS * cell["members"]


def family_key(cell: dict) -> str:
    """The table a cell belongs to: its generator family (on real CT slices), or that family's
    null-generator control."""
    family = f"{cell['family']} on real CT" if cell.get("data") == "ct" else cell["family"]
    return f"{family} (null generator)" if cell.get("null") else family


def cell_verdicts(cells: list[dict]) -> dict[tuple[str, str], list[str]]:
    """``(table, size) -> [verdict per seed]`` (cells run before verdicts were recorded have none)."""
    out: dict[tuple[str, str], list[str]] = {}
    for c in cells:
        if "verdict" in c:
            out.setdefault((family_key(c), str(c["members"])), []).append(c["verdict"]["verdict"])
    return out


def verdict_counts(verdicts: list[str]) -> str:
    counts = {v: verdicts.count(v) for v in dict.fromkeys(verdicts)}
    return ", ".join(f"{v} {k}/{len(verdicts)}" for v, k in counts.items())


def control_check(results: dict) -> list[str]:
    """Null cells: every detector at chance, no leak found. Leaking cells: a leak found."""
    lines = []
    for fam, by_size in results["summary"].items():
        if "null" not in fam:
            continue
        for size, by_det in by_size.items():
            rows = {d: v for d, v in by_det.items() if d != "copy_rate"}
            off = [d for d, v in rows.items() if chance_note(v["roc_auc"]) not in ("", "no better than chance")]
            lines.append(f"- {fam}, {size} members: every detector at chance — "
                         + ("met" if not off else f"**not met** ({', '.join(off)})"))
            fw = {d: v.get("roc_auc_fw", (float("nan"),) * 2) for d, v in rows.items()}
            if rows and any("roc_auc_fw" in v for v in rows.values()):
                head = (f"- {fam}, {size} members: every detector at chance, family-wise (the {len(rows)} rows of this "
                        f"table at once: each interval at {1 - 0.05 / len(rows):.2%}, Bonferroni) — ")
                if any(np.isnan(lo) for lo, _ in fw.values()):
                    lines.append(head + "not assessed (a row has no interval: fewer than 5 held-out images a class, "
                                        "or a cell run before the intervals were recorded)")
                else:
                    off = [d for d, (lo, hi) in fw.items() if not lo <= 0.5 <= hi]
                    lines.append(head + ("met" if not off else f"**not met** ({', '.join(off)})"))
    cells = results.get("cells", [])
    null = [c["verdict"]["verdict"] for c in cells if c.get("null") and "verdict" in c]
    leaking = [c["verdict"]["verdict"] for c in cells if "verdict" in c and is_leaking(c)]
    if null:
        found = null.count("Leak detected")
        lines.append(f"- null-generator cells: \"Leak detected\" in {found} of {len(null)} — "
                     + ("met" if found == 0 else "**not met**"))
    if leaking:
        found = leaking.count("Leak detected")
        lines.append(f"- leaking cells (copy rate ≥ {LEAKING_COPY_RATE:.0%}, near-copies of ≥ {LEAKING_MEMBERS:.0%} of "
                     f"the members where recorded): \"Leak detected\" in {found} of "
                     f"{len(leaking)} — " + ("met" if found == len(leaking) else "**not met**"))
    return lines


# The orders ``vitprint bench --ct`` has dealt real CT slices in (member, non-member, reference slice), and
# what each means for the cells and for the null cells' reference slices; an order not named here is
# reported by its name alone.
CT_ORDER = "member, non-member, reference, non-member, member, reference"
EARLIER_CT_ORDER = "member, non-member, reference"
CT_ORDER_SAYS = {
    CT_ORDER: (" (every member's neighbouring slices are a non-member and a reference slice, the non-member "
               "below as often as above; three slices along, the order swaps members and non-members)",
               "; each lies between two members or two non-members, as many of each"),
    EARLIER_CT_ORDER: (" (every member's neighbouring slices are a non-member and a reference slice)",
                       "; each lies between a non-member below and a member above"),
}


def markdown(results: dict, command: str, figures: dict[str, str], copy_figure: str | None = None) -> str:
    cfg, mach = results["config"], results["machine"]
    rows = [v["roc_auc"] for fam in results["summary"].values() for by_det in fam.values() for v in by_det.values()]
    seeds = max((int(r[3]) for r in rows), default=cfg["seeds"])
    one_seed_rows = any(r[3] == 1 and not np.isnan(r[1]) for r in rows)  # bootstrap intervals (older cells: none)
    ct = results.get("data", {}).get("ct")
    # Cells dealt before the order was recorded were dealt member, non-member, reference (EARLIER_CT_ORDER).
    dealing = results.get("data", {}).get("dealing") or EARLIER_CT_ORDER
    peers = {p for c in results.get("cells", []) for p in c.get("peers", [])}
    lines = [
        f"Command: `{command}`",
        "",
        f"Machine: {mach['cpu']}, {mach['threads']} threads, GPU: {mach['gpu']}, torch {mach['torch']}; "
        f"run {results.get('started')} – {results.get('finished')}"
        + (f"; combined rows recomputed from the cells' stored scores {results['recombined']} "
           f"(benchmarks/recombine.py)." if "recombined" in results else "."),
        f"Setting: preset `{cfg['preset']}` at {cfg['image_size']} px; generators trained for "
        f"{cfg['gen_steps']} steps of batch {cfg['batch_size']} on the members only; {cfg['n_generated']} generated "
        f"images; autoencoder {cfg['ae_epochs']} epochs on them from an encoder pretrained on separate phantoms. "
        f"Thresholds and the combiner fitted on one stratified half of the reals, metrics on the other half. "
        + (f"Mean over {'up to ' if len({int(r[3]) for r in rows}) > 1 else ''}{seeds} seeds with a 95% t-interval "
           "over them. " if seeds > 1 else "One seed. ")
        + ("A ROC-AUC of one seed has a 95% bootstrap interval over its held-out images instead (members and "
           "non-members resampled apart, 1,000 draws: the spread from which images were held out, for this one "
           "trained generator, not from training it again); the other metrics of one seed have none. "
           if one_seed_rows else "")
        + (f"Real CT ({', '.join(ct)}): axial slices in the lung window dealt in turn, {dealing}"
           + CT_ORDER_SAYS.get(dealing, ("", ""))[0] + ". "
           "Reference set (for the calibrated `_cal` scores and DOMIAS): those reference slices, never seen by "
           "the generator. " if ct else
           "Reference set (for the calibrated `_cal` scores and DOMIAS): as many other patients as members, "
           "never seen by the generator. ")
        + ("Generated images perturbed (shift 4-8%, contrast +-10%, offset, noise) before scoring. "
           if results.get("perturbed") else "")
        + "Peers (the literature's methods) are marked; the copy rate is the share of generated images that are "
          "near-copies of a member minus the share near a non-member (0 when nothing was memorised); it counts "
          "images, so the members with a near-copy are counted too where recorded (a collapsed generator copies one). "
        + ("Null-generator tables: the generator learns the reference slices (never a member"
           + CT_ORDER_SAYS.get(dealing, ("", ""))[1] + "), so every detector must sit at chance and no leak "
           "may be found. "
           if ct else
           "Null-generator tables: the generator is trained on as many other patients as there are members "
           "(never a member), so every detector must sit at chance and no leak may be found. ")
        + "The verdict row is `vitprint detect`'s verdict on all the cell's real images.",
        "",
    ]
    verdicts = cell_verdicts(results.get("cells", []))
    copied: dict[tuple[str, str], list[tuple[int, str]]] = {}  # (seed, "members" or "members (non-members)")
    for c in sorted(results.get("cells", []), key=lambda c: c.get("seed", 0)):
        if "members_copied" in c:
            text = str(c["members_copied"]) + (f" ({c['non_members_copied']})" if "non_members_copied" in c else "")
            copied.setdefault((family_key(c), str(c["members"])), []).append((c.get("seed", 0), text))
    for fam, by_size in results["summary"].items():
        lines += [f"#### {fam}", "", "| members | detector | " + " | ".join(h for _, h in COLUMNS) + " | |",
                  "|---|---|" + "---|" * len(COLUMNS) + "---|"]
        for size, by_det in sorted(by_size.items(), key=lambda kv: int(kv[0])):
            if (fam, size) in verdicts:
                lines.append(f"| {size} | *verdict of `vitprint detect` per seed* | "
                             f"{verdict_counts(verdicts[fam, size])} |" + " |" * len(COLUMNS))
            if "copy_rate" in by_det:
                lines.append(f"| {size} | *copy rate of the generated set* | {_cell(by_det['copy_rate']['roc_auc'])} |"
                             + " |" * len(COLUMNS))
            if (fam, size) in copied:
                per_seed = ", ".join(f"seed {seed}: {text}" for seed, text in copied[fam, size])
                lines.append(f"| {size} | *members with a near-copy (non-members: chance), of {size}* | {per_seed} |"
                             + " |" * len(COLUMNS))
            for det, v in by_det.items():
                if det == "copy_rate":
                    continue
                mark = " (peer)" if det in peers else ""
                lines.append(f"| {size} | {det}{mark} | " + " | ".join(_cell(v[k]) for k, _ in COLUMNS)
                             + f" | {chance_note(v['roc_auc'])} |")
        if fam in figures:
            lines += ["", f"![ROC-AUC against member-set size, {fam}]({figures[fam]})"]
        lines.append("")
    if copy_figure:
        lines += [f"![held-out ROC-AUC against the copy rate, every cell]({copy_figure})", ""]
    lines += ["Target — the combiner at least as good as the best single detector on AUC, per cell:", ""]
    lines += combiner_check({f: v for f, v in results["summary"].items() if "null" not in f}, results.get("cells", ()))
    lines += ["", "Targets — controls that can fail:", ""] + control_check(results)
    if "speed" in results:
        # How the rows were timed, as they record it (rows from before the record timed one search from cold).
        timed = sorted({r.get("timed", "one search, timed from cold") for r in results["speed"]})
        lines += ["", "Scoring speed (exact search, CPU, real images scored against N generated; "
                  f"each row: {' / '.join(timed)}; peak memory above the level before the first search; "
                  "latent_nn also has to encode the generated set once):",
                  "", "| detector | generated | real images/s | seconds | peak extra MB | encoding the generated set (s) |",
                  "|---|---:|---:|---:|---:|---:|"]
        for r in results["speed"]:
            enc = f"{r['encode_generated_s']:.1f}" if r["detector"] == "latent_nn" else "–"
            lines.append(f"| {r['detector']} | {r['generated']:,} | {r['real_per_s']:.1f} | {r['seconds']:.2f} | "
                         f"{r['peak_extra_mb']:.0f} | {enc} |")
    return "\n".join(lines) + "\n"


def auc_figures(results: dict, folder: Path, stem: str) -> dict[str, Path]:
    out = {}
    for fam, by_size in results["summary"].items():
        table: dict[str, dict[int, tuple]] = {}
        for size, by_det in by_size.items():
            for det, v in by_det.items():
                m, lo, hi = v["roc_auc"][:3]
                table.setdefault(det, {})[int(size)] = (m, lo if not np.isnan(lo) else m, hi if not np.isnan(hi) else m)
        safe = re.sub(r"[^a-z0-9]+", "_", fam.lower()).strip("_")
        out[fam] = plots.metric_vs_size(table, folder / f"{stem}_{safe}.png", title=f"{fam}: held-out ROC-AUC")
    return out


SHOWN_BY_COPY_RATE = ("recon", "align_nn", "copy_nn", "combined", "pixel_nn", "pixel_nn_cal", "mc", "logan", "domias")


def copy_rate_points(cells: list[dict], detectors=SHOWN_BY_COPY_RATE) -> dict[str, list[tuple]]:
    """``detector -> [(copy rate, ROC-AUC, low, high, null)]``, one point per cell that recorded its copy
    rate (the interval: the cell's bootstrap interval of the held-out ROC-AUC where it has one)."""
    out: dict[str, list[tuple]] = {}
    for c in cells:
        if "copy_rate" not in c:
            continue
        for det in detectors:
            m = c["detectors"].get(det)
            if m is not None:
                lo, hi = m.get("roc_auc_interval", (float("nan"), float("nan")))
                out.setdefault(det, []).append((c["copy_rate"], m["roc_auc"], lo, hi, bool(c.get("null"))))
    return out


def copy_rate_figure(cells: list[dict], path: Path, title: str = "") -> Path | None:
    """Held-out ROC-AUC against the copy rate, every cell of ``cells`` (``None`` where none has both)."""
    points = copy_rate_points(cells)
    if not points:
        return None
    peers = {p for c in cells for p in c.get("peers", [])}
    return plots.metric_vs_copy_rate(points, path, peers=peers, title=title)


def update_section(doc: Path, key: str, body: str, title: str) -> None:
    """Replace (or append) the block between ``<!-- key -->`` and ``<!-- /key -->`` in ``doc``."""
    start, end = f"<!-- {key} -->", f"<!-- /{key} -->"
    block = f"{start}\n{body}{end}"
    text = doc.read_text() if doc.is_file() else "# Benchmarks\n"
    if start in text and end in text:
        text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + f"\n\n## {title}\n\n{block}\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)


def grid_part(results: dict) -> list[str]:
    """The families and sizes the results file's cells hold where they are not the scale's whole grid (in
    the grid's order; ``[]`` for the whole grid, or for a file written before the grid was recorded): such a
    part gets its own docs section, so it never replaces the whole grid's."""
    grid = results.get("default_grid")
    cells = [c for c in results.get("cells", []) if not c.get("null")] or results.get("cells", [])
    if not grid or not cells:
        return []
    families = sorted({c["family"] for c in cells}, key=lambda f: (f not in grid["families"], f))
    sizes = sorted({int(c["members"]) for c in cells})
    return ([*families] if set(families) != set(grid["families"]) else []) + \
        ([str(n) for n in sizes] if set(sizes) != set(grid["sizes"]) else [])


def write_tables(results: dict, command: str, doc: Path | None, out: Path) -> Path:
    """The tables and AUC plots: into ``doc``'s section for this scale (and data, perturbation, training
    length, and the families and sizes where they are not the scale's whole grid), replacing it, or into
    ``out/results.md``. Returns the markdown file written."""
    steps = results.get("config", {}).get("gen_steps")
    longer = steps != results.get("default_gen_steps", steps)  # a longer (or shorter) setting: its own section
    ct = results.get("data", {}).get("ct")  # real CT slices instead of phantoms: their own section
    part = grid_part(results)
    key = (f"membership-{results['scale']}" + ("-ct" if ct else "") + ("-perturbed" if results.get("perturbed") else "")
           + (f"-steps{steps}" if longer else "") + "".join(f"-{v}" for v in part))
    cells = results.get("cells", [])
    if doc is None:
        figs = auc_figures(results, out, "auc")
        by_rate = copy_rate_figure(cells, out / "auc_copy_rate.png")
        path = out / "results.md"
        path.write_text(markdown(results, command, {k: Path(v).name for k, v in figs.items()},
                                 by_rate.name if by_rate else None))
        return path
    stem = key.replace("-", "_")
    figs = auc_figures(results, doc.parent / "figures", stem)
    rel = {k: str(Path(v).relative_to(doc.parent)) for k, v in figs.items()}
    by_rate = copy_rate_figure(cells, doc.parent / "figures" / f"{stem}_copy_rate.png")
    # The results beside the docs: later figures (benchmarks/auc_vs_copy_rate.py) are drawn from them.
    kept = doc.parent / "results" / f"{key}.json"
    kept.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(kept, lambda tmp: Path(tmp).write_text(json.dumps(results, indent=1, default=float)))
    title = (f"Membership benchmark, --scale {results['scale']}" + (f", real CT ({', '.join(ct)})" if ct else "")
             + (", perturbed copies" if results.get("perturbed") else "")
             + (f", generators trained {steps} steps" if longer else "") + (f" ({', '.join(part)})" if part else ""))
    update_section(doc, key, markdown(results, command, rel, str(by_rate.relative_to(doc.parent)) if by_rate else None),
                   title)
    return doc
