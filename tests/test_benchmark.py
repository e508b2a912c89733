import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from vitprint.benchmark import heldout_metrics, mean_interval, summarise
from vitprint.cli import main
from vitprint.evaluation.bench_report import update_section


def test_membership_benchmark_end_to_end_at_toy_size(tmp_path, capsys):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nkept text\n")
    argv = ["bench", "--scale", "toy", "--families", "dcgan", "vae", "--sizes", "8", "--seeds", "2",
            "--out", str(tmp_path / "b"), "--docs", str(doc)]
    assert main(argv) == 0, capsys.readouterr().err
    res = json.loads((tmp_path / "b" / "results.json").read_text())
    assert len(res["cells"]) == 8  # 2 families x 2 seeds, and as many null-generator cells
    assert sum(c["null"] for c in res["cells"]) == 4
    assert {c["verdict"]["verdict"] for c in res["cells"]} <= {"Leak detected", "No evidence of a leak", "Inconclusive"}
    assert set(res["summary"]) == {"dcgan", "vae", "dcgan (null generator)", "vae (null generator)"}
    cell = res["cells"][0]["detectors"]
    assert set(cell) == {"recon", "latent_nn", "pixel_nn", "mc", "align_nn", "copy_nn", "subspace", "domias", "logan", "recon_cal", "pair", "combined",
                         "latent_nn_cal", "pixel_nn_cal", "mc_cal", "subspace_cal"}
    assert {"pixel_nn", "pixel_nn_cal", "mc", "domias", "logan"} <= set(res["cells"][0]["peers"])
    assert -1.0 <= res["cells"][0]["copy_rate"] <= 1.0 and 0 <= res["cells"][0]["members_copied"] <= 8
    assert set(cell["recon"]) == {"roc_auc", "tpr_at_1pct_fpr", "kappa", "accuracy", "roc_auc_interval", "roc_auc_interval_fw"}
    assert {r["generated"] for r in res["speed"]} == {100, 200}
    assert all(r["timed"] == "median of 3 after an untimed search" and r["real_per_s"] > 0 for r in res["speed"])
    text = doc.read_text()
    assert "kept text" in text and "#### dcgan" in text and "#### vae" in text and "Target" in text
    assert "#### dcgan (null generator)" in text and "null-generator cells: \"Leak detected\" in" in text
    assert "*verdict of `vitprint detect` per seed*" in text and "*members with a near-copy (non-members: chance), of 8*" in text
    assert "; kept: " in text  # what the combiner's inner cross-validation kept, per seed
    assert "each row: median of 3 after an untimed search;" in text and "timed from cold" not in text
    # Each cell keeps every real image's scores (members first): its held-out metrics follow from them alone.
    c0 = res["cells"][0]
    again = heldout_metrics({k: np.asarray(v) for k, v in c0["scores"].items()},
                            np.r_[np.ones(8, int), np.zeros(8, int)], c0["seed"])
    for det in ("combined", "align_nn", "pixel_nn"):
        assert again[det]["roc_auc"] == pytest.approx(c0["detectors"][det]["roc_auc"])
    assert again["combined"]["choice"] == c0["detectors"]["combined"]["choice"]
    assert (tmp_path / "figures" / "membership_toy_8_dcgan.png").is_file()  # a part of the grid: sizes 8
    assert (tmp_path / "figures" / "membership_toy_8_copy_rate.png").is_file() and "against the copy rate" in text
    assert json.loads((tmp_path / "results" / "membership-toy-8.json").read_text())["cells"] == res["cells"]
    # Running again continues instead of recomputing, and replaces the section in place.
    assert main(argv) == 0
    assert len(json.loads((tmp_path / "b" / "results.json").read_text())["cells"]) == 8
    assert doc.read_text().count("<!-- membership-toy-8 -->") == 1
    assert "pixel_nn (peer)" in doc.read_text() and "copy rate" in doc.read_text()
    # Combined rows recomputed from the stored scores: the section rendered again says so.
    spec = importlib.util.spec_from_file_location("recombine", Path(__file__).parents[1] / "benchmarks" / "recombine.py")
    recombine = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recombine)
    assert "recomputed from the cells' stored scores" not in doc.read_text()
    assert recombine.main([str(tmp_path / "b" / "results.json")]) == 0
    assert main(argv) == 0
    assert "recomputed from the cells' stored scores" in doc.read_text()


def test_perturbation_shifts_and_rewindows_but_keeps_the_image():
    from vitprint.benchmark import perturb

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (3, 64, 64), dtype=np.uint8)
    out = perturb(img, seed=1)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert not np.array_equal(out, img)
    # Undoing the best circular shift leaves a strong correlation: the content is the same image.
    a, b = img[0].astype(float), out[0].astype(float)
    best = max(np.corrcoef(np.roll(b, (dy, dx), (0, 1)).ravel(), a.ravel())[0, 1]
               for dy in range(-6, 7) for dx in range(-6, 7))
    assert best > 0.9


def test_heldout_metrics_separate_a_clear_signal():
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(40, int), np.zeros(40, int)]
    values = {"good": y * 2.0 + rng.normal(0, 0.5, 80), "noise": rng.normal(size=80)}
    m = heldout_metrics(values, y, seed=0)
    assert m["good"]["roc_auc"] > 0.9 and m["good"]["accuracy"] > 0.8
    assert 0.2 < m["noise"]["roc_auc"] < 0.8
    assert m["combined"]["roc_auc"] > 0.9 and m["combined"]["choice"] == "single: good"


def test_mean_interval_and_summary():
    m, lo, hi = mean_interval([0.5, 0.6, 0.7])
    assert m == pytest.approx(0.6) and lo < 0.6 < hi
    # t(0.975, 2) = 4.303; sd = 0.1; half-width = 4.303 * 0.1 / sqrt(3)
    assert hi - m == pytest.approx(4.303 * 0.1 / 3 ** 0.5, rel=1e-3)
    assert mean_interval([0.9, 1.0, 0.99])[2] <= 1.0
    cells = [{"family": "dcgan", "members": 8, "seed": s,
              "detectors": {"x": {"roc_auc": a, "tpr_at_1pct_fpr": 0, "kappa": 0, "accuracy": 0.5}}}
             for s, a in enumerate([0.5, 0.6, 0.7])]
    assert summarise(cells)["dcgan"]["8"]["x"]["roc_auc"][0] == pytest.approx(0.6)
    rates = [{**c, "copy_rate": r} for c, r in zip(cells, (-0.08, 0.0, 0.02))]  # a null generator's copy rates
    m, lo, hi, _ = summarise(rates)["dcgan"]["8"]["copy_rate"]["roc_auc"]
    assert m == pytest.approx(-0.02) and lo < m < hi and lo < 0  # not clipped at 0


def test_family_wise_intervals_are_wider_than_each_rows_own():
    rng = np.random.default_rng(1)
    y = np.r_[np.ones(40, int), np.zeros(40, int)]
    values = {f"d{i}": rng.normal(size=80) for i in range(9)}  # 9 rows and the combiner: 10 at once
    cells = [{"family": "vae", "members": 40, "seed": s, "detectors": heldout_metrics(values, y, seed=s)} for s in range(3)]
    row = cells[0]["detectors"]["d0"]
    (lo, hi), (flo, fhi) = row["roc_auc_interval"], row["roc_auc_interval_fw"]
    assert flo < lo < row["roc_auc"] < hi < fhi  # 99.5% against 95%
    one = summarise(cells[:1])["vae"]["40"]["d0"]
    assert one["roc_auc_fw"] == row["roc_auc_interval_fw"]
    # Three seeds: the mean AUC with the seeds' held-out spread, at 1 - 0.05 / 10 (z = 2.807).
    three = summarise(cells)["vae"]["40"]["d0"]
    se = np.sqrt(sum(((c["detectors"]["d0"]["roc_auc_interval"][1] - c["detectors"]["d0"]["roc_auc_interval"][0])
                      / 3.92) ** 2 for c in cells)) / 3
    assert three["roc_auc_fw"] == pytest.approx([three["roc_auc"][0] - 2.807 * se, three["roc_auc"][0] + 2.807 * se], abs=1e-3)


def test_the_family_wise_control_fails_only_past_what_many_rows_give_by_chance():
    from vitprint.evaluation.bench_report import control_check

    def cell(rows):  # one seed of a null table: detector -> (AUC, 95% interval, family-wise interval)
        return {"family": "vae", "members": 32, "seed": 0, "null": True, "copy_rate": 0.0,
                "detectors": {d: {"roc_auc": a, "tpr_at_1pct_fpr": 0, "kappa": 0, "accuracy": 0.5,
                                  "roc_auc_interval": i95, "roc_auc_interval_fw": ifw} for d, (a, i95, ifw) in rows.items()}}

    quiet = {f"d{i}": (0.5, [0.35, 0.65], [0.25, 0.75]) for i in range(9)}
    one_off = {**quiet, "x": (0.68, [0.52, 0.83], [0.45, 0.9])}  # past 95%, not past 99.5%
    text = "\n".join(control_check({"cells": [cell(one_off)], "summary": summarise([cell(one_off)])}))
    assert "every detector at chance — **not met** (x)" in text and "10 rows of this table at once" in text
    assert "at once: each interval at 99.50%, Bonferroni) — met" in text
    far_off = {**quiet, "x": (0.9, [0.8, 0.97], [0.7, 1.0])}
    text = "\n".join(control_check({"cells": [cell(far_off)], "summary": summarise([cell(far_off)])}))
    assert "Bonferroni) — **not met** (x)" in text
    unknown = {**quiet, "x": (0.5, [float("nan")] * 2, [float("nan")] * 2)}
    text = "\n".join(control_check({"cells": [cell(unknown)], "summary": summarise([cell(unknown)])}))
    assert "Bonferroni) — not assessed" in text


def test_the_control_check_can_fail():
    from vitprint.evaluation.bench_report import control_check

    def cell(null, verdict, copy_rate, auc):
        return {"family": "dcgan", "members": 8, "seed": 0, "null": null, "copy_rate": copy_rate,
                "verdict": {"verdict": verdict},
                "detectors": {"x": {"roc_auc": auc, "tpr_at_1pct_fpr": 0, "kappa": 0, "accuracy": 0.5}}}

    cells = [cell(True, "Leak detected", 0.0, a) for a in (0.8, 0.85)] + [cell(False, "No evidence of a leak", 0.3, 0.9)]
    text = "\n".join(control_check({"cells": cells, "summary": summarise(cells)}))
    assert "every detector at chance — **not met** (x)" in text
    assert "null-generator cells: \"Leak detected\" in 2 of 2 — **not met**" in text
    assert "leaking cells (copy rate ≥ 5%, near-copies of ≥ 25% of the members where recorded): \"Leak detected\" " \
           "in 0 of 1 — **not met**" in text
    # A generator collapsed onto one member copies often but leaves one member to find: not a leaking cell.
    collapsed = {**cell(False, "No evidence of a leak", 0.4, 0.5), "members_copied": 1}
    text = "\n".join(control_check({"cells": [*cells, collapsed], "summary": summarise(cells)}))
    assert "in 0 of 1 — **not met**" in text
    spread = {**collapsed, "members_copied": 2, "verdict": {"verdict": "Leak detected"}}
    assert "in 1 of 2 — **not met**" in "\n".join(control_check({"cells": [*cells, spread], "summary": summarise(cells)}))


def test_update_section_appends_then_replaces(tmp_path):
    doc = tmp_path / "d.md"
    update_section(doc, "k", "one\n", "Title")
    update_section(doc, "k", "two\n", "Title")
    text = doc.read_text()
    assert "two" in text and "one" not in text and text.count("## Title") == 1


def test_scoring_speed_times_warm_searches_and_reports_their_median(monkeypatch):
    """Each row: one untimed search, then SPEED_REPEATS timed ones, of which the median is reported."""
    import vitprint.benchmark as bench

    calls, plain = [], bench.knn_distances
    monkeypatch.setattr(bench, "knn_distances", lambda *a, **k: calls.append(len(a[1])) or plain(*a, **k))
    # A clock read twice to time the encoder, then twice per timed search: each row's three searches last
    # 6, 2 and 1 seconds (median 2; mean 3, first 6, last and fastest 1).
    clock = {"reads": 0, "now": 0.0}

    def perf_counter():
        k = clock["reads"] = clock["reads"] + 1
        ends_a_search = k > 2 and (k - 2) % 2 == 0
        clock["now"] += (6.0, 2.0, 1.0)[((k - 3) // 2) % 3] if ends_a_search else 1.0
        return clock["now"]

    monkeypatch.setattr(bench.time, "perf_counter", perf_counter)
    rows = bench.scoring_speed(bench.SCALES["toy"], None)
    assert [(r["detector"], r["generated"]) for r in rows] == [(d, n) for n in (100, 200) for d in ("pixel_nn", "latent_nn")]
    assert calls == [n for n in (100, 200) for _ in range(2) for _ in range(1 + bench.SPEED_REPEATS)]
    assert all(r["seconds"] == 2.0 and r["real_per_s"] == 8.0 for r in rows)  # the median: 16 queries in 2 s


def test_peak_memory_is_sampled_while_the_block_runs():
    import time

    from vitprint.benchmark import PeakRSS

    with PeakRSS() as mem:
        block = np.ones(128 * 2**20 // 8)  # 128 MB, freed before the block ends
        time.sleep(0.05)
        del block
    assert mem._thread.is_alive() is False and mem.extra_mb > 32


def test_copy_rate_counts_copies_of_members_beyond_chance():
    from vitprint.benchmark import copy_stats, near_copies

    rng = np.random.default_rng(0)
    members, non = rng.integers(0, 256, (2, 20, 16, 16)).astype(np.uint8)

    def copies(x):
        return np.clip(x + rng.normal(0, 2, x.shape), 0, 255).astype(np.uint8)

    assert copy_stats(copies(members), members, non) == (1.0, len(members), 0)
    rate, *_ = copy_stats(rng.integers(0, 256, (20, 16, 16)).astype(np.uint8), members, non)
    assert abs(rate) <= 0.1  # chance
    # Copies of members and of images the generator never saw, equally often: nothing beyond chance.
    assert copy_stats(np.concatenate([copies(members[:10]), copies(non[:10])]), members, non) == (0.0, 10, 10)
    assert copy_stats(copies(non), members, non) == (-1.0, 0, len(non))  # below chance, not clipped
    # A generator collapsed onto one member: every sample a copy, one member copied.
    collapsed = copies(np.repeat(members[3:4], 20, axis=0))
    assert copy_stats(collapsed, members, non) == (1.0, 1, 0)
    near, source = near_copies(collapsed, members, non)
    assert near.all() and set(source) == {3}
    with pytest.raises(ValueError, match="as many non-members"):
        copy_stats(collapsed, members, non[:5])


def test_a_longer_generator_setting_gets_its_own_results_file(tmp_path, capsys):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "results.json").write_text(json.dumps({"scale": "toy", "config": {"gen_steps": 6}, "cells": []}))
    assert main(["bench", "--scale", "toy", "--gen-steps", "60", "--out", str(tmp_path / "b")]) == 2
    assert "holds a benchmark with 6 generator steps" in capsys.readouterr().err
    assert main(["bench", "--scale", "toy", "--gen-steps", "0", "--out", str(tmp_path / "c")]) == 2
    assert "generator steps must be >= 1" in capsys.readouterr().err
    assert main(["bench", "--task", "attribution", "--gen-steps", "60", "--out", str(tmp_path / "d")]) == 2
    assert "--gen-steps belong" in capsys.readouterr().err


def test_a_real_ct_family_deals_neighbouring_slices_to_different_roles(tmp_path, capsys):
    nib = pytest.importorskip("nibabel")
    from vitprint.benchmark import ct_roles, ct_slices

    # A small volume (x, y, z = 40, 32, 30; HU): a texture per slice.
    vol = np.random.default_rng(0).normal(-600, 300, (40, 32, 30)).astype(np.float32)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "ct.nii.gz")
    (slices,) = ct_slices([str(tmp_path / "ct.nii.gz")], 16)
    assert slices.shape == (30, 16, 16) and slices.dtype == np.uint8
    members, non_members, reference = ct_roles([slices], 10)
    index = {x.tobytes(): i for i, x in enumerate(slices)}
    assert len(index) == 30  # every slice tells its place in the volume
    role = {index[x.tobytes()]: r for r, group in zip("mnr", (members, non_members, reference)) for x in group}
    assert len(role) == 30 and [role[i] for i in range(6)] == list("mnrnmr")
    # Every member's neighbours are a non-member and a reference slice, the non-member below as often as above.
    inner = [i for i in range(1, 29) if role[i] == "m"]
    assert all(sorted((role[i - 1], role[i + 1])) == ["n", "r"] for i in inner)
    below = [role[i - 1] == "n" for i in inner]
    assert abs(2 * sum(below) - len(below)) <= 1
    # A null cell's generator learns the reference slices: as many lie between two members as between two
    # non-members (with the order member, non-member, reference, every one had its non-member below and its
    # member above, and copies of them leaned towards whichever side the scan made nearer).
    sides = [role[i - 1] + role[i + 1] for i in range(1, 29) if role[i] == "r"]
    assert sorted(set(sides)) == ["mm", "nn"] and abs(sides.count("mm") - sides.count("nn")) <= 1
    # Three slices along, members and non-members swap and reference slices stay: with nothing leaked the two
    # groups are alike whichever way the anatomy runs; and each has one reference slice beside it, which
    # the calibrated scores compare with (an evenly spaced order left half the members without one).
    swap = {"m": "n", "n": "m", "r": "r"}
    assert all(role[i + 3] == swap[role[i]] for i in range(27))
    assert all((role[i - 1] + role[i + 1]).count("r") == 1 for i in range(1, 29) if role[i] in "mn")
    with pytest.raises(ValueError, match="at most 10 members per cell"):
        ct_roles([slices], 11)
    # The bench command: cells on the slices, their own table and docs section; a size that does not fit
    # is refused before any work.
    doc = tmp_path / "benchmarks.md"
    base = ["bench", "--scale", "toy", "--families", "vae", "--seeds", "1", "--no-speed", "--ct", str(tmp_path / "ct.nii.gz"),
            "--docs", str(doc)]
    assert main([*base, "--sizes", "12", "--out", str(tmp_path / "big")]) == 2
    assert "at most 10 members per cell" in capsys.readouterr().err
    assert main([*base, "--sizes", "8", "--out", str(tmp_path / "b")]) == 0, capsys.readouterr().err
    res = json.loads((tmp_path / "b" / "results.json").read_text())
    assert {c["data"] for c in res["cells"]} == {"ct"}
    assert res["data"] == {"ct": ["ct.nii.gz"], "dealing": "member, non-member, reference, non-member, member, reference"}
    assert set(res["summary"]) == {"vae on real CT", "vae on real CT (null generator)"}
    text = doc.read_text()
    assert "<!-- membership-toy-ct-vae-8 -->" in text and "real CT (ct.nii.gz)" in text
    assert "dealt in turn, member, non-member, reference, non-member, member, reference" in text
    assert "between two members or two non-members" in text
    # The same folder continues (nothing left to run); one of the earlier order is refused, and a results
    # file of that order is still described as it was dealt.
    assert main([*base, "--sizes", "8", "--out", str(tmp_path / "b")]) == 0, capsys.readouterr().err
    from vitprint.evaluation.bench_report import markdown

    earlier = markdown({**res, "data": {"ct": ["ct.nii.gz"]}}, "bench", {})
    assert "dealt in turn, member, non-member, reference (every member's" in earlier
    assert "each lies between a non-member below and a member above" in earlier
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "results.json").write_text(json.dumps({"scale": "toy", "data": {"ct": ["ct.nii.gz"]}, "cells": []}))
    assert main([*base, "--sizes", "8", "--out", str(tmp_path / "old")]) == 2
    assert "dealt in another order (member, non-member, reference)" in capsys.readouterr().err
    assert main(["bench", "--scale", "toy", "--families", "vae", "--seeds", "1", "--sizes", "8", "--no-speed",
                 "--out", str(tmp_path / "b")]) == 2  # phantom cells are not mixed into it
    assert "holds a benchmark on other data" in capsys.readouterr().err


def test_one_seed_gets_a_bootstrap_interval_that_can_exclude_chance():
    from vitprint.evaluation.bench_report import chance_note, markdown

    rng = np.random.default_rng(1)
    y = np.r_[np.ones(64, int), np.zeros(64, int)]
    values = {"clear": y * 2.0 + rng.normal(0, 0.5, 128), "noise": rng.normal(size=128)}
    m = heldout_metrics(values, y, seed=0)
    lo, hi = m["clear"]["roc_auc_interval"]
    assert 0.5 < lo <= m["clear"]["roc_auc"] <= hi <= 1.0
    lo, hi = m["noise"]["roc_auc_interval"]
    assert lo < m["noise"]["roc_auc"] < hi and hi - lo > 0.1  # 32 + 32 held-out images: a wide interval
    cell = {"family": "vae", "members": 64, "seed": 0, "detectors": m}
    summary = summarise([cell])
    assert summary["vae"]["64"]["clear"]["roc_auc"][1:3] == m["clear"]["roc_auc_interval"]
    assert chance_note(summary["vae"]["64"]["clear"]["roc_auc"]) == "better than chance"
    assert chance_note(summary["vae"]["64"]["noise"]["roc_auc"]) == "no better than chance"
    assert np.isnan(summary["vae"]["64"]["clear"]["kappa"][1])  # the other metrics: no interval from one seed
    # With several seeds the t-interval over them is kept.
    other = heldout_metrics({"clear": y * 2.0 + rng.normal(0, 0.6, 128), "noise": rng.normal(size=128)}, y, seed=1)
    mean, lo, hi, n = summarise([cell, {**cell, "seed": 1, "detectors": other}])["vae"]["64"]["clear"]["roc_auc"]
    assert n == 2 and mean == pytest.approx((m["clear"]["roc_auc"] + other["clear"]["roc_auc"]) / 2)
    half = 12.706 * abs(m["clear"]["roc_auc"] - other["clear"]["roc_auc"]) / 2  # t(0.975, 1) * sd / sqrt(2)
    assert 0 < half < 0.4 and lo == pytest.approx(mean - half, abs=1e-3)
    results = {"config": {"seeds": 1, "preset": "tiny", "image_size": 64, "gen_steps": 10, "batch_size": 8,
                          "n_generated": 8, "ae_epochs": 1},
               "machine": {"cpu": "x", "threads": "1", "gpu": "none", "torch": "t"}, "cells": [cell], "summary": summary}
    assert "A ROC-AUC of one seed has a 95% bootstrap interval" in markdown(results, "cmd", {})
    # Cells written before the interval existed: the header does not claim one.
    old = {**cell, "detectors": {d: {k: v for k, v in r.items() if k != "roc_auc_interval"} for d, r in m.items()}}
    text = markdown({**results, "cells": [old], "summary": summarise([old])}, "cmd", {})
    assert "bootstrap" not in text and "One seed." in text
    # A folder holding three seeds of one row and one of another: both kinds named.
    mixed = [cell, {**cell, "seed": 1, "detectors": other}, {**cell, "seed": 2, "detectors": other},
             {**cell, "members": 16}]
    text = markdown({**results, "cells": mixed, "summary": summarise(mixed)}, "cmd", {})
    assert "Mean over up to 3 seeds with a 95% t-interval" in text and "A ROC-AUC of one seed" in text


def test_the_bootstrap_auc_interval_narrows_with_more_images_and_needs_enough_of_each():
    from sklearn.metrics import roc_auc_score

    from vitprint.evaluation.metrics import auc_interval

    rng = np.random.default_rng(0)
    widths = []
    for n in (16, 64, 256):
        y = np.r_[np.ones(n, int), np.zeros(n, int)]
        s = np.round(rng.normal(size=2 * n) + 0.5 * y, 1)  # ties count half, as in sklearn
        lo, hi = auc_interval(y, s, n_boot=2000)
        assert lo < roc_auc_score(y, s) < hi
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2] and 2.5 < widths[0] / widths[2] < 6  # about 1 / sqrt(n): 4
    # Perfectly separated but too few to say anything: no interval rather than [1, 1].
    assert np.isnan(auc_interval([1, 1, 0, 0], [2.0, 3.0, 0.0, 1.0])[0])
    assert auc_interval(np.r_[np.ones(5), np.zeros(5)], np.arange(10)[::-1]) == (1.0, 1.0)
    assert np.isnan(auc_interval(np.ones(10, int), np.arange(10))[0])  # one class only


def test_the_one_seed_interval_misses_chance_about_as_often_as_it_says_on_random_scores():
    from vitprint.evaluation.metrics import auc_interval

    rng = np.random.default_rng(0)
    y = np.r_[np.ones(8, int), np.zeros(8, int)]  # the smallest held-out half the benchmark shows (16 members)
    misses = [not (lo <= 0.5 <= hi) for lo, hi in (auc_interval(y, rng.normal(size=16), n_boot=500, seed=t)
                                                    for t in range(300))]
    assert 0.02 < np.mean(misses) < 0.10  # nominal 5%


def test_a_part_of_the_grid_gets_its_own_docs_section(tmp_path):
    from vitprint.evaluation.bench_report import grid_part, write_tables

    y = np.r_[np.ones(8, int), np.zeros(8, int)]

    def cell(family, n, null=False):
        return {"family": family, "members": n, "seed": 0, "null": null, "copy_rate": 0.25,
                "detectors": heldout_metrics({"x": y + np.linspace(0, 0.1, 16)}, y, seed=0)}

    cells = [cell("ddpm", 16), cell("ddpm", 16, null=True)]
    results = {"scale": "cpu", "cells": cells, "summary": summarise(cells), "default_gen_steps": 10,
               "default_grid": {"families": ["dcgan", "vae"], "sizes": [64, 256]},
               "config": {"seeds": 1, "preset": "tiny", "image_size": 64, "gen_steps": 10, "batch_size": 8,
                          "n_generated": 8, "ae_epochs": 1, "families": ["ddpm"], "sizes": [16]},
               "machine": {"cpu": "x", "threads": "1", "gpu": "none", "torch": "t"}}
    doc = tmp_path / "b.md"
    doc.write_text("# B\n\n<!-- membership-cpu -->\nthe whole grid\n<!-- /membership-cpu -->\n")
    write_tables(results, "cmd", doc, tmp_path)
    text = doc.read_text()
    assert "the whole grid" in text  # not replaced
    assert "<!-- membership-cpu-ddpm-16 -->" in text and "## Membership benchmark, --scale cpu (ddpm, 16)" in text
    assert (tmp_path / "figures" / "membership_cpu_ddpm_16_ddpm.png").is_file()
    # What the file holds decides, in any order given, not the last command's flags.
    grid = [cell(f, n) for f in ("vae", "dcgan") for n in (256, 64)]
    assert grid_part({**results, "cells": grid}) == []
    assert grid_part({**results, "cells": grid + cells}) == ["dcgan", "vae", "ddpm", "16", "64", "256"]
    assert grid_part({**results, "cells": grid[:2]}) == ["vae"]
    assert grid_part({"cells": cells}) == []  # a file from before the grid was recorded: the scale's section
    write_tables({**results, "cells": grid, "summary": summarise(grid)}, "cmd", doc, tmp_path)
    assert "the whole grid" not in doc.read_text()
