"""The benchmark scripts' own logic on synthetic data: the real-CT case builder (layout, truth, copies,
controls) and the verdict controls' crash-safe results file."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter

spec = importlib.util.spec_from_file_location("real_ct", Path(__file__).parents[1] / "benchmarks" / "real_ct.py")
real_ct = importlib.util.module_from_spec(spec)
spec.loader.exec_module(real_ct)


def test_case_layout_truth_and_interleaved_roles(tmp_path):
    rng = np.random.default_rng(0)
    volume = gaussian_filter(rng.normal(size=(30, 40, 48)), 2) * 400 - 700  # HU-like, mostly "lung"
    truth = real_ct.build_case(volume, tmp_path, n_dev=5, n_test=3, n_generated=20, slab=1, seed=0, size=32)
    dev, test = tmp_path / "dev", tmp_path / "test"
    assert len(list((dev / "real_used").iterdir())) == 5 and len(list((dev / "real_not_used").iterdir())) == 5
    assert len(list((test / "real_unknown").iterdir())) == 6 and sorted(truth.values()) == [0, 0, 0, 1, 1, 1]
    assert len(list((dev / "generated").iterdir())) == 20 == len(list((test / "generated").iterdir()))
    img = np.asarray(Image.open(next((dev / "real_used").iterdir())))
    assert img.shape == (32, 32) and img.dtype == np.uint8
    far = real_ct.copy_of(volume[10], np.random.default_rng(1), 32, "mild", shift=(0, 0)).astype(float)
    assert np.corrcoef(far.ravel(), real_ct.square(real_ct.window(volume[10]), 32).ravel())[0, 1] > 0.8  # unshifted
    hard = real_ct.copy_of(volume[10], np.random.default_rng(1), 32, "warped")
    assert hard.shape == (32, 32) and hard.dtype == np.uint8
    # Re-windowed far from the real images' window, the copy keeps the slice's structure.
    source = real_ct.square(real_ct.window(volume[10]), 32)
    for seed in range(3):
        copy = real_ct.copy_of(volume[10], np.random.default_rng(seed), 32, "rewindowed").astype(float)
        best = max(np.corrcoef(np.roll(copy, (dy, dx), (0, 1)).ravel(), source.ravel())[0, 1]
                   for dy in range(-9, 10) for dx in range(-9, 10))
        assert best > 0.8 and not np.allclose(copy.mean(), source.mean(), atol=1)


def test_mirrored_share_of_the_generated_images(tmp_path):
    """``mirrored``: that share of the generated images is mirrored left to right, the copies otherwise the
    same as without it."""
    rng = np.random.default_rng(0)
    volume = gaussian_filter(rng.normal(size=(30, 40, 48)), 2) * 400 - 700

    def generated(out, **kw):
        real_ct.build_case(volume, out, n_dev=5, n_test=3, n_generated=40, slab=1, seed=0, size=32, **kw)
        return [np.asarray(Image.open(f)) for f in sorted((out / "dev" / "generated").iterdir())]

    plain, zero, all_ = (generated(tmp_path / name, **kw) for name, kw in
                         (("plain", {}), ("zero", {"mirrored": 0.0}), ("all", {"mirrored": 1.0})))
    assert all(np.array_equal(a, b) for a, b in zip(plain, zero))
    assert all(np.array_equal(a[:, ::-1], b) for a, b in zip(plain, all_))
    half = generated(tmp_path / "half", mirrored=0.5)
    flipped = [not np.array_equal(h, p) for h, p in zip(half, plain)]
    assert all(np.array_equal(h, p[:, ::-1]) for h, p, f in zip(half, plain, flipped) if f)
    assert 8 <= sum(flipped) <= 32  # about half of 40
    turned = generated(tmp_path / "turned", turn="turned 90 degrees")
    assert all(np.array_equal(np.rot90(p, -1), t) for p, t in zip(plain, turned))


def _copied_slices(monkeypatch, volume, **kw):
    """Build a case; return the slice indices (of ``volume``) each generated image copies, and the slices
    each folder holds (its images compared with every windowed slice)."""
    copied = []

    def record(hu_slice, rng, size, kind="mild", shift=(4, 8)):
        copied.append(next((i for i, v in enumerate(volume) if v is hu_slice or np.array_equal(v, hu_slice)), -1))
        return np.zeros((size, size), np.uint8)

    monkeypatch.setattr(real_ct, "copy_of", record)
    kw.setdefault("slab", 1)
    real_ct.build_case(volume, kw.pop("out"), n_dev=4, n_test=2, n_generated=12, seed=0, size=32, **kw)
    return copied


def test_control_cases_copy_slices_that_no_folder_holds(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    volume = gaussian_filter(rng.normal(size=(40, 40, 48)), 2) * 400 - 700
    windowed = [real_ct.square(real_ct.window(v), 32).astype(np.uint8) for v in volume]

    def slice_of(path):
        return next(i for i, w in enumerate(windowed) if np.array_equal(w, np.asarray(Image.open(path))))

    def held(out):
        """The slices of the members and of the non-members (development and test, by the truth)."""
        truth = dict(line.split(",") for line in (out / "truth.csv").read_text().split())
        unknown = {slice_of(p): int(truth[p.stem]) for p in (out / "test/real_unknown").iterdir()}
        members = {slice_of(p) for p in (out / "dev/real_used").iterdir()} | {s for s, y in unknown.items() if y}
        non = {slice_of(p) for p in (out / "dev/real_not_used").iterdir()} | {s for s, y in unknown.items() if not y}
        return members, non

    leak = _copied_slices(monkeypatch, volume, out=tmp_path / "leak")
    members, non = held(tmp_path / "leak")
    assert set(leak) == members and len(members) == len(non) == 6  # a leak: the copies are of every member
    assert all(m - 1 in non for m in members)  # interleaved: each member's neighbour is a non-member
    unused = _copied_slices(monkeypatch, volume, out=tmp_path / "unused", source="unused")
    members, non = held(tmp_path / "unused")
    assert -1 not in unused and not set(unused) & (members | non) and len(members) == len(non) == 6
    assert all(s - 1 in members | non for s in unused)  # interleaved: the slice before it is in a folder
    # each copied slice lies between a member and a non-member, the member below it as often as above
    assert all({s - 1, s + 1} & members and {s - 1, s + 1} & non for s in unused)
    assert sum(s - 1 in members for s in set(unused)) == sum(s + 1 in members for s in set(unused)) == 3
    for slab in (2, 4):  # slabs of neighbouring slices: each role still gets its full count
        unused = _copied_slices(monkeypatch, volume, out=tmp_path / f"slab{slab}", source="unused", slab=slab)
        members, non = held(tmp_path / f"slab{slab}")
        assert len(members) == len(non) == 6 and not set(unused) & (members | non)
    other = _copied_slices(monkeypatch, volume, out=tmp_path / "other", source="other", other=volume[::-1] + 1.0)
    assert set(other) == {-1}  # none is a slice of this volume
    mixed = _copied_slices(monkeypatch, volume, out=tmp_path / "novel", novel=0.5, other=volume[::-1] + 1.0)
    members, non = held(tmp_path / "novel")
    assert mixed.count(-1) == 6 and set(mixed) - {-1} == members  # half novel, every member still copied
    with pytest.raises(SystemExit, match="copies for"):
        _copied_slices(monkeypatch, volume, out=tmp_path / "few", novel=0.75, other=volume[::-1] + 1.0)


def test_verdict_controls_keep_finished_simulations_after_a_crash(tmp_path, monkeypatch):
    import json

    spec = importlib.util.spec_from_file_location(
        "verdict_controls", Path(__file__).parents[1] / "benchmarks" / "verdict_controls.py")
    controls = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(controls)
    calls = []

    def fake(kind, seed, n):
        if len(calls) == 3 and not any(c == ("crash",) for c in calls):
            calls.append(("crash",))
            raise KeyboardInterrupt
        calls.append((kind, seed))
        return {"kind": kind, "seed": seed, "verdict": "No evidence of a leak", "primary": "x", "auc": 0.5,
                "p": 0.5, "blind_auc": 0.5}

    monkeypatch.setattr(controls, "one_run", fake)
    out = tmp_path / "c.json"
    earlier = {"n_per_side": 4, "detectors": list(controls.DETECTORS),
               "runs": [{**fake("null", 9, 4), "verdict": "Leak detected"}]}
    calls.clear()
    out.write_text(json.dumps(earlier))  # the output is also an earlier file merged into it
    args = ["--runs", "2", "--n", "4", "--merge", str(out), "--out", str(out)]
    with pytest.raises(KeyboardInterrupt):
        controls.main(args)
    assert json.loads(out.read_text()) == earlier  # untouched until the end
    assert len(json.loads((tmp_path / "c.json.partial").read_text())["runs"]) == 3
    controls.main(args)
    result = json.loads(out.read_text())
    plan = [(k, s) for k in ("null", "confounded", "leak") for s in range(2)]
    assert sorted((r["kind"], r["seed"]) for r in result["runs"]) == sorted([*plan, ("null", 9)])
    assert [c for c in calls if c != ("crash",)] == plan  # each simulation ran once
    assert result["summary"]["null"]["runs"] == 3 and not (tmp_path / "c.json.partial").exists()


def test_memorisation_dial_trains_once_through_its_stops_and_continues(tmp_path, capsys):
    import json

    spec = importlib.util.spec_from_file_location(
        "memorisation_dial", Path(__file__).parents[1] / "benchmarks" / "memorisation_dial.py")
    dial = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dial)
    out = tmp_path / "dial"
    args = ["--family", "vae", "--members", "4", "--samples", "12", "--scale", "toy", "--out", str(out)]
    assert dial.main([*args, "--epochs", "1", "2"]) == 0
    rows = json.loads((out / "dial.json").read_text())["rows"]
    assert [r["epochs"] for r in rows] == [1, 2]
    assert all(-1 <= r["copy_rate"] <= 1 and 0 <= r["pixel_nn1_auc"] <= 1 and 0 <= r["members_copied"] <= 4 for r in rows)
    # the samples' orientation vote, taken (12 samples, 8 real images), every sample voting once
    assert all(abs(sum(r["orientation"]["generated"].values()) - 1) < 0.01 and r["orientation"]["turned_back"] == []
               for r in rows)
    assert len((out / "gen" / "metrics.jsonl").read_text().splitlines()) == 2  # one run, continued
    # A rerun with a further stop trains on from epoch 2 and keeps the rows measured.
    assert dial.main([*args, "--epochs", "1", "2", "3"]) == 0
    assert [r["epochs"] for r in json.loads((out / "dial.json").read_text())["rows"]] == [1, 2, 3]
    assert len((out / "gen" / "metrics.jsonl").read_text().splitlines()) == 3
    with pytest.raises(SystemExit):  # another setting in the same folder is refused
        dial.main([*args[:4], "--samples", "13", *args[6:], "--epochs", "4"])
    assert "holds another setting" in capsys.readouterr().err
    for bad, says in ((["nope"], "unknown detector"), (["domias"], "needs a reference set"),
                      (["pair"], "labelled images"), (["recon"], "autoencoder")):  # refused before any training
        with pytest.raises(SystemExit):
            dial.main([*args[:-1], str(tmp_path / "other"), "--epochs", "1", "--detectors", *bad])
        assert says in capsys.readouterr().err
    assert not (tmp_path / "other").exists()


def test_memorisation_dial_on_ct_slices_reports_each_named_detector(tmp_path):
    import json

    import nibabel as nib

    spec = importlib.util.spec_from_file_location(
        "memorisation_dial", Path(__file__).parents[1] / "benchmarks" / "memorisation_dial.py")
    dial = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dial)
    rng = np.random.default_rng(0)
    vol = (rng.normal(-600, 300, (32, 32, 15))).astype(np.int16)  # 15 axial slices: 5 per role
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "ct.nii.gz")
    out = tmp_path / "dial"
    assert dial.main(["--family", "vae", "--members", "4", "--samples", "8", "--scale", "toy", "--epochs", "1",
                      "--ct", str(tmp_path / "ct.nii.gz"), "--detectors", "pixel_nn", "align_nn", "--out", str(out)]) == 0
    saved = json.loads((out / "dial.json").read_text())
    assert saved["setting"]["ct"] == str((tmp_path / "ct.nii.gz").resolve())
    assert saved["setting"]["dealing"].startswith("member, non-member, reference, non-member")  # resumes only as dealt
    assert saved["setting"]["detectors"] == ["pixel_nn", "align_nn"]
    row = saved["rows"][0]
    assert 0 <= row["pixel_nn_auc"] <= 1 and 0 <= row["align_nn_auc"] <= 1
    assert 0 <= row["members_copied"] <= 4 and 0 <= row["non_members_copied"] <= 4
    assert row["orientation"]["generated"] == {}  # 8 samples: below the vote's 10, no vote
    with pytest.raises(SystemExit):  # more members than the volume's slices allow
        dial.main(["--family", "vae", "--members", "6", "--scale", "toy", "--epochs", "1",
                   "--ct", str(tmp_path / "ct.nii.gz"), "--out", str(tmp_path / "big")])


def test_auc_against_copy_rate_puts_every_cell_of_several_files_on_one_figure(tmp_path, capsys):
    import json

    spec = importlib.util.spec_from_file_location(
        "auc_vs_copy_rate", Path(__file__).parents[1] / "benchmarks" / "auc_vs_copy_rate.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)

    def cell(rate, null, auc, **extra):
        return {"family": "vae", "members": 8, "seed": 0, "null": null, "copy_rate": rate, "peers": ["pixel_nn"],
                "detectors": {"align_nn": {"roc_auc": auc, "roc_auc_interval": [auc - 0.1, min(1.0, auc + 0.1)]},
                              "pixel_nn": {"roc_auc": 0.6}}, **extra}

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "results.json").write_text(json.dumps({"cells": [cell(0.4, False, 0.9, members_copied=5),
                                                                       cell(0.0, True, 0.5)]}))
    (tmp_path / "b.json").write_text(json.dumps({"cells": [cell(0.1, False, 0.7), {"family": "old", "detectors": {}}]}))
    out = tmp_path / "fig.png"
    assert script.main([str(tmp_path / "a" / "results.json"), str(tmp_path / "b.json"), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert out.is_file() and out.stat().st_size > 1000
    assert "| a | vae | 8 | 0 | 0.400 | 5/8 | align_nn 0.900 | pixel_nn 0.600 |" in text
    assert "| a | vae (null generator) | 8 | 0 | 0.000 | – |" in text and "| b | vae | 8 | 0 | 0.100 |" in text
    assert text.count("| vae") == 3  # the cell without a copy rate is left out
    (tmp_path / "none.json").write_text(json.dumps({"cells": []}))
    with pytest.raises(SystemExit):
        script.main([str(tmp_path / "none.json"), "--out", str(out)])


def test_whitebox_bound_scores_one_cell_and_reuses_its_generator(tmp_path, capsys):
    import json

    spec = importlib.util.spec_from_file_location("whitebox_bound", Path(__file__).parents[1] / "benchmarks" / "whitebox_bound.py")
    bound = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bound)
    out = tmp_path / "wb"
    args = ["--members", "6", "--samples", "8", "16", "--scale", "toy", "--out", str(out)]
    assert bound.main(args) == 0
    row = json.loads((out / "bound.json").read_text())
    assert set(row) == {"members", "seed", "whitebox_reconstruction", "pixel_nn1_8", "pixel_nn1_16", "subspace_8",
                        "subspace_16", "subspace_cal_8", "subspace_cal_16"}
    assert all(0 <= v <= 1 for k, v in row.items() if k not in ("members", "seed"))
    trained = (out / "gen" / "metrics.jsonl").read_text()
    assert bound.main(args) == 0  # the cell's generator is trained once
    assert (out / "gen" / "metrics.jsonl").read_text() == trained
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["whitebox_reconstruction"] == round(row["whitebox_reconstruction"], 3)
    with pytest.raises(SystemExit):  # another cell's generator is never reused
        bound.main([*args, "--seed", "1"])
    assert "holds another generator" in capsys.readouterr().err


def test_recombine_recomputes_only_the_combined_row_from_the_stored_scores(tmp_path, capsys):
    import json

    from vitprint.benchmark import heldout_metrics

    spec = importlib.util.spec_from_file_location("recombine", Path(__file__).parents[1] / "benchmarks" / "recombine.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(20, int), np.zeros(20, int)]
    scores = {"good": (y * 2.0 + rng.normal(size=40)).tolist(), "noise": rng.normal(size=40).tolist()}
    stale = {"roc_auc": 0.1, "tpr_at_1pct_fpr": 0.0, "kappa": 0.0, "accuracy": 0.5}
    kept = heldout_metrics({k: np.asarray(v) for k, v in scores.items()}, y, 1)
    cells = [{"family": "vae", "members": 20, "seed": 1, "scores": scores,
              "detectors": {"good": kept["good"], "noise": kept["noise"], "combined": dict(stale)}},
             {"family": "vae", "members": 20, "seed": 2, "detectors": {"good": kept["good"], "combined": dict(stale)}}]
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"cells": cells}))
    assert script.main([str(path), "--dry-run"]) == 0
    assert json.loads(path.read_text())["cells"][0]["detectors"]["combined"] == stale  # nothing written
    assert script.main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "combined 0.100 (logistic) -> " in out and "no stored scores, left as it is" in out
    res = json.loads(path.read_text())
    assert res["cells"][0]["detectors"]["combined"]["roc_auc"] == pytest.approx(kept["combined"]["roc_auc"])
    assert res["cells"][0]["detectors"]["good"] == kept["good"] and res["cells"][1]["detectors"]["combined"] == stale
    assert res["summary"]["vae"]["20"]["combined"]["roc_auc"][3] == 2 and "recombined" in res
    (tmp_path / "bad.json").write_text("{")
    assert script.main([str(tmp_path / "bad.json")]) == 2 and "error:" in capsys.readouterr().err


def _chest(rng, n, size):
    """``(n, size, size)`` HU slices of a crude chest: air around a body, lungs of textured low density, a
    dense spine at the back and a heart off to one side (so that no turn of a slice looks like the slice)."""
    yy, xx = np.mgrid[:size, :size] / size
    body = ((yy - 0.5) / 0.38) ** 2 + ((xx - 0.5) / 0.46) ** 2 < 1
    lungs = body & ((((yy - 0.45) / 0.25) ** 2 + ((np.abs(xx - 0.5) - 0.2) / 0.14) ** 2) < 1)
    heart = (((yy - 0.5) / 0.12) ** 2 + ((xx - 0.58) / 0.1) ** 2) < 1
    spine = (((yy - 0.8) / 0.06) ** 2 + ((xx - 0.5) / 0.06) ** 2) < 1
    texture = gaussian_filter(rng.normal(size=(n, size, size)), 1.5) * 300
    return np.where(body, 40, -1000) + np.where(lungs & ~heart, -780 + texture, 0) + np.where(spine, 600, 0.0)


def test_orientation_vote_script_on_a_saved_case(tmp_path):
    """``benchmarks/orientation_vote.py`` reads a case folder and reports the turn a job would undo: none for
    the case as built, 'upside down' for the same case with every generated image stored upside down."""
    import json

    spec = importlib.util.spec_from_file_location("orientation_vote",
                                                  Path(__file__).parents[1] / "benchmarks" / "orientation_vote.py")
    vote = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(vote)
    volume = _chest(np.random.default_rng(2), 40, 48)
    for name, turn in (("plain", "as stored"), ("upside", "upside down")):
        real_ct.build_case(volume, tmp_path / name, n_dev=8, n_test=4, n_generated=40, slab=1, seed=0, size=48,
                           turn=turn)
    assert vote.main([str(tmp_path / "plain"), str(tmp_path / "upside"), "--size", "48",
                      "--out", str(tmp_path / "votes.json")]) == 0
    rows = {r["set"]: r for r in json.loads((tmp_path / "votes.json").read_text())}
    plain, upside = (f"{tmp_path / name} (development)" for name in ("plain", "upside"))
    assert set(rows) == {plain, upside}  # one generated set each (the test folder holds a copy of it)
    assert rows[plain]["turned_back"] == [] and rows[plain]["turned"] == {}
    # a quarter of the copies vote "turned 180 degrees" (the crude chest is nearly symmetric left to right), not
    # enough to count on its own: they are turned back as the set is, upside down
    assert rows[upside]["turned_back"] == ["upside down"] and rows[upside]["generated"]["turned 180 degrees"] > 0.2
    with pytest.raises(SystemExit):
        vote.main([str(tmp_path)])  # not a case folder
    (tmp_path / "bare" / "dev" / "generated").mkdir(parents=True)
    with pytest.raises(SystemExit):
        vote.main([str(tmp_path / "bare")])  # no real images: one line, not a traceback


def test_align_speed_scores_the_same_images_with_both_versions(tmp_path):
    """``benchmarks/align_speed.py`` times the current ``align_nn`` and an earlier one (here, a file holding
    today's module: the same scores) on the same images; a revision that does not exist is one line."""
    import json

    spec = importlib.util.spec_from_file_location("align_speed",
                                                  Path(__file__).parents[1] / "benchmarks" / "align_speed.py")
    speed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(speed)
    earlier = tmp_path / "align_nn.py"
    earlier.write_text((Path(__file__).parents[1] / speed.MODULE).read_text())
    assert speed.main(["--cases", "toy", "--repeats", "1", "--reference", str(earlier),
                       "--out", str(tmp_path / "speed.json")]) == 0
    (row,) = json.loads((tmp_path / "speed.json").read_text())["rows"]
    assert row["case"] == "toy" and set(row["seconds"]) == {"current", "reference"}
    assert row["largest score difference"] == 0.0
    assert row["ROC-AUC"]["current"] == row["ROC-AUC"]["reference"] > 0.6  # copies found, alike
    with pytest.raises(SystemExit, match="cannot read"):
        speed.main(["--cases", "toy", "--reference", "no-such-revision", "--out", str(tmp_path / "x.json")])


def test_thin_slices_put_each_pair_of_neighbours_mean_between_them():
    volume = np.stack([np.full((4, 4), v, np.float32) for v in (-1000.0, -601.0, 40.0)])
    volume[1, 0, 0] = 7.0
    thin = real_ct.halfway_slices(volume)
    assert thin.shape == (5, 4, 4)
    assert np.array_equal(thin[0::2], volume)  # the slices as they were, in order
    assert thin[1, 1, 1] == -800.0 and thin[3, 1, 1] == -280.0  # (-601 + 40) / 2 = -280.5, in whole HU
    assert thin[1, 0, 0] == -496.0 and thin[3, 0, 0] == 23.0  # each pixel its own mean: (-1000 + 7) / 2 = -496.5


def test_align_grid_scores_a_saved_case_under_each_setting(tmp_path, monkeypatch):
    """``benchmarks/align_grid.py case`` scores ``align_nn`` on a case ``real_ct.py`` wrote, once per setting,
    and appends one line per (case, setting); a misspelt option is refused, not ignored."""
    import json

    spec = importlib.util.spec_from_file_location("align_grid",
                                                  Path(__file__).parents[1] / "benchmarks" / "align_grid.py")
    grid = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(grid)
    rng = np.random.default_rng(0)
    volume = gaussian_filter(rng.normal(size=(30, 48, 48)), (0.5, 2, 2)) * 400 - 700  # neighbours apart
    real_ct.build_case(volume, tmp_path / "case", n_dev=6, n_test=2, n_generated=16, slab=1, seed=0, size=64,
                       shift=(1, 2))
    small = {"align_size": 64, "max_rotation": 0.0, "max_scale": 0.0}
    out = tmp_path / "grid.jsonl"
    made = []  # the options each detector was made with: a setting's option reaches the detector
    create = grid.create_detector
    monkeypatch.setattr(grid, "create_detector", lambda name, **kw: made.append(kw) or create(name, **kw))
    assert grid.main(["case", str(tmp_path / "case"), "--setting", f"wide={json.dumps(small)}",
                      "--setting", f"tiles8={json.dumps({**small, 'local_tile': 8})}", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["setting"] for r in rows] == ["wide", "tiles8"] and rows[1]["options"]["local_tile"] == 8
    assert all(r["roc_auc"] == 1.0 and r["members_winning"] == 6 for r in rows)  # every member's copy found
    assert {**small, "local_tile": 8} in made and small in made
    for bad in ('typo={"rotaton_step": 1}', 'odd={"local_tile": "x"}', 'neg={"rotation_step": -1, "max_rotation": 5}'):
        with pytest.raises(SystemExit):
            grid.main(["case", str(tmp_path / "case"), "--setting", bad, "--out", str(out)])
    with pytest.raises(SystemExit):  # two settings of one name
        grid.main(["case", str(tmp_path / "case"), "--setting", "a={}", "--setting", "a={}", "--out", str(out)])
    assert len(out.read_text().splitlines()) == 2  # nothing written for the refused runs


def test_nrrd_volumes_become_nifti_that_bench_reads_as_it_reads_any_nifti(tmp_path):
    """An NRRD header's LPS space becomes the RAS affine NIfTI stores, so a converted volume's slices come
    out of `bench --ct` the same way round as those of a volume stored in RAS from the start (as
    TotalSegmentator's example is): volumes of several sources can share one cell."""
    nib = pytest.importorskip("nibabel")
    from vitprint.benchmark import ct_slices

    spec = importlib.util.spec_from_file_location("nrrd_to_nifti",
                                                  Path(__file__).parents[1] / "benchmarks" / "nrrd_to_nifti.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    header = {"space": "left-posterior-superior", "space directions": np.diag([0.7, 0.7, 5.0]),
              "space origin": np.array([-150.0, -300.0, -700.0])}
    affine = script.nifti_affine(header)
    assert np.allclose(affine[:3, :3], np.diag([-0.7, -0.7, 5.0])) and np.allclose(affine[:3, 3], [150, 300, -700])
    # NRRD's "space directions" give each voxel axis's step as a row: one step along the first axis of an
    # oblique volume moves by that row (in LPS), the same point in RAS.
    oblique = script.nifti_affine({**header, "space directions": np.array([[0.7, 0.1, 0], [0, 0.7, 0], [0, 0.2, 5.0]])})
    assert np.allclose(oblique @ [1, 0, 0, 1], [150 - 0.7, 300 - 0.1, -700, 1])
    assert np.allclose(oblique @ [0, 0, 1, 1], [150, 300 - 0.2, -695, 1])
    # One anatomy, a bright block at the patient's right front, stored both ways: in LPS index space the first
    # voxels lie towards the right (i) and the front (j), in RAS the last ones.
    lps = np.full((20, 20, 4), -1000, np.int16)
    lps[:6, :6] = 300
    nib.save(nib.Nifti1Image(lps, affine), tmp_path / "converted.nii.gz")
    nib.save(nib.Nifti1Image(lps[::-1, ::-1].copy(), np.diag([0.7, 0.7, 5.0, 1.0])), tmp_path / "ras.nii.gz")
    (converted,), (native,) = (ct_slices([str(tmp_path / f)], 20) for f in ("converted.nii.gz", "ras.nii.gz"))
    assert np.array_equal(converted, native)
    assert converted[:, :6].mean() > converted[:, -6:].mean() + 40  # the front at the top, either way
    # Without the turn into RAS the block would land elsewhere: the check can fail.
    nib.save(nib.Nifti1Image(lps, np.diag([0.7, 0.7, 5.0, 1.0])), tmp_path / "unturned.nii.gz")
    (unturned,) = ct_slices([str(tmp_path / "unturned.nii.gz")], 20)
    assert not np.array_equal(unturned, native)
    with pytest.raises(ValueError, match="expected left-posterior-superior"):
        script.nifti_affine({**header, "space": "right-anterior-superior"})
    with pytest.raises(ValueError, match="no space origin"):
        script.nifti_affine({k: v for k, v in header.items() if k != "space origin"})
    for bad in (tmp_path / "none.nrrd", tmp_path / "v.nii.gz"):  # a missing file; not an NRRD file
        with pytest.raises(SystemExit) as stop:
            script.main([str(bad)])
        assert stop.value.code == 2
    # The whole conversion, from an NRRD file: the same voxels, the same affine, beside it as .nii.gz.
    nrrd = pytest.importorskip("nrrd")
    nrrd.write(str(tmp_path / "v.nrrd"), lps, {"space": "left-posterior-superior",
                                                "space directions": header["space directions"],
                                                "space origin": header["space origin"]})
    assert script.main([str(tmp_path / "v.nrrd")]) == 0
    out = tmp_path / "v.nii.gz"
    (written,) = ct_slices([str(out)], 20)
    assert np.array_equal(written, native) and np.allclose(nib.load(str(out)).affine, affine)


def test_real_ct_reads_an_nrrd_volume_as_the_same_anatomy_stored_in_nifti(tmp_path):
    """`real_ct.py` reads NRRD through its header's LPS space, so an NRRD volume beside a NIfTI one (as
    `--other-volume`) is not a mirror image of it, and both come out the way `bench --ct` shows them."""
    nib = pytest.importorskip("nibabel")
    nrrd = pytest.importorskip("nrrd")
    from vitprint.benchmark import ct_slices

    lps = np.full((20, 20, 4), -1000, np.int16)  # LPS index space: the first voxels towards right and front
    lps[:6, :6] = 300  # a block at the patient's right front
    steps = np.diag([0.7, 0.7, 5.0])
    nrrd.write(str(tmp_path / "v.nrrd"), lps, {"space": "left-posterior-superior", "space directions": steps,
                                                "space origin": np.array([-150.0, -300.0, -700.0])})
    nib.save(nib.Nifti1Image(lps[::-1, ::-1].copy(), np.diag([0.7, 0.7, 5.0, 1.0])), tmp_path / "ras.nii.gz")
    from_nrrd, from_nifti = real_ct.load_volume(tmp_path / "v.nrrd"), real_ct.load_volume(tmp_path / "ras.nii.gz")
    assert np.array_equal(from_nrrd, from_nifti)
    (shown,) = ct_slices([str(tmp_path / "ras.nii.gz")], 20)
    block = from_nifti > 0
    assert block.any() and np.array_equal(block, shown > shown.mean())  # where bench shows the block
    # An NRRD file whose header gives no space cannot be turned: refused in one line, exit status 2.
    nrrd.write(str(tmp_path / "bare.nrrd"), lps)
    with pytest.raises(SystemExit) as stop:
        real_ct.main([str(tmp_path / "bare.nrrd"), "--out", str(tmp_path / "case")])
    assert stop.value.code == 2 and not (tmp_path / "case").exists()


def test_decision_speed_runs_both_kappa_computations_to_the_same_decisions(tmp_path, capsys):
    """``benchmarks/decision_speed.py`` reruns a stored cell's decision step with one scikit-learn call per
    threshold and with the one-pass kappas: the same metrics and verdict both ways, and the per-call way is
    the one it patched in (the calls are counted)."""
    spec = importlib.util.spec_from_file_location("decision_speed",
                                                  Path(__file__).parents[1] / "benchmarks" / "decision_speed.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    import json

    rng = np.random.default_rng(0)
    n = 8
    scores = {name: list(rng.normal(size=2 * n) + shift * np.r_[np.ones(n), np.zeros(n)])
              for name, shift in (("align_nn", 2.0), ("pixel_nn", 0.3), ("pair", 1.0))}
    cell = {"family": "vae", "members": n, "seed": 0, "null": False, "scores": scores,
            "verdict": {k: None for k in ("verdict", "primary", "primary_auc", "p_value", "blind_auc", "cv_auc")}}
    assert script.supervised(list(scores)) == ["pair"]  # kept from the verdict, as run_cell keeps it
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"scale": "toy", "data": "phantoms", "cells": [cell]}))
    calls = []
    real_per_cut = script.per_cut
    script.per_cut = lambda *a: calls.append(1) or real_per_cut(*a)
    assert script.main([str(results), "--cells", "vae-8-0", "--repeats", "1", "--out", str(tmp_path / "o.json")]) == 0
    (row,) = json.loads((tmp_path / "o.json").read_text())["rows"]
    assert row["same_metrics_and_verdict"] and not row["verdict_as_stored"] and calls
    for bad in (["--cells", "vae-64-0"], ["--repeats", "0"]):  # no such cell; no run
        with pytest.raises(SystemExit) as stop:
            script.main([str(results), *bad])
        assert stop.value.code == 2


def test_generator_speed_trains_both_versions_to_the_same_weights(tmp_path):
    """``benchmarks/generator_speed.py`` trains the current code and a git revision's in turns: with the
    revision the current commit, the same weights bit for bit; a revision git does not know is refused."""
    import json
    import subprocess

    root = Path(__file__).parents[1]
    if subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True).returncode:
        pytest.skip("not a git checkout")
    spec = importlib.util.spec_from_file_location("generator_speed", root / "benchmarks" / "generator_speed.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "speed.json"
    assert script.main(["--reference", "HEAD", "--scale", "toy", "--members", "8", "--steps", "2", "--repeats", "1",
                        "--out", str(out)]) == 0
    row = json.loads(out.read_text())
    assert row["same_weights"] and row["reference_s"] > 0 and row["current_s"] > 0 and row["epochs"] == 2
    # each version ran its own code: the reference from the temporary worktree, the current from this tree
    (ref,), (cur,) = row["runs"]["reference"], row["runs"]["current"]
    assert "reference" in Path(ref["code"]).parts and Path(cur["code"]).is_relative_to(root / "src")
    assert row["current_commit"]
    with pytest.raises(SystemExit) as stop:
        script.main(["--reference", "no-such-revision-x", "--scale", "toy", "--repeats", "1"])
    assert stop.value.code == 2
