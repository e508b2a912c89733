"""Whether the generated images are turned against the real ones, and what the job does about it."""

from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

import pytest
import torch

import vitprint
from vitprint.data.orientation import MIRRORED, ORIENTATIONS, check_orientation, turn_back


def _slices(rng, n, size=64):
    """Smooth random 'slices', brighter on the left and at the top: a left and a right, a top and a bottom."""
    x = np.stack([gaussian_filter(rng.normal(size=(size, size)), 1.5) for _ in range(n)])
    x = 128 + 40 * x / x.std()
    x[:, :, : size // 2] += 30
    x[:, : size // 2] += 20
    return np.clip(x, 0, 255).astype(np.uint8)


def _copies(rng, real, turn=lambda x: x):
    return np.stack([np.clip(np.roll(turn(r).astype(float), (2, -3), (0, 1)) + rng.normal(0, 4, r.shape), 0, 255)
                     for r in real]).astype(np.uint8)


def test_copies_as_stored_mirrored_and_upside_down():
    rng = np.random.default_rng(0)
    real = _slices(rng, 40)
    assert check_orientation(_copies(rng, real[:20]), real).turned() == {}
    mirrored = check_orientation(_copies(rng, real[:20], lambda x: x[:, ::-1]), real)
    assert list(mirrored.turned()) == [MIRRORED] and mirrored.shares[MIRRORED] > 0.9
    assert mirrored.excess[MIRRORED] > 0.6  # far beyond the real images' own votes among themselves
    upside = check_orientation(_copies(rng, real[:20], lambda x: x[::-1]), real)
    assert list(upside.turned()) == ["upside down"]
    half = np.concatenate([_copies(rng, real[:15], lambda x: x[:, ::-1]), _copies(rng, real[15:30])])
    assert list(check_orientation(half, real).turned()) == [MIRRORED]  # half of them: a generator trained with flips
    few = check_orientation(_copies(rng, real[:20], lambda x: x[:, ::-1]), real, max_generated=12)
    assert few.n_generated == 12 and few.n_real == 40 and list(few.turned()) == [MIRRORED]


def test_novel_images_and_too_few_images_report_no_turn():
    """Generated images that copy nothing, nothing turned: no turn reported. Too few images: no vote."""
    rng = np.random.default_rng(1)
    real = _slices(rng, 40)
    assert check_orientation(_slices(rng, 60), real).turned() == {}
    mirrored = _copies(rng, real[:20], lambda x: x[:, ::-1])
    few = check_orientation(mirrored[:9], real)
    assert few.turned() == {} and sum(few.shares.values()) == 0  # 9 generated images: below min_votes
    assert check_orientation(mirrored, real[:1]).turned() == {}  # one real image: no baseline
    assert few.to_dict()["voted"] is False and check_orientation(mirrored, real).to_dict()["voted"] is True


def test_each_rule_of_the_vote_on_its_own():
    """A turn other than the mirror image must outvote the images as stored (a set stored another way); the
    mirror image needs 10 votes, not a majority."""
    rng = np.random.default_rng(5)
    real = _slices(rng, 40)
    some = np.concatenate([_copies(rng, real[:12], lambda x: x[::-1]), _copies(rng, real[12:40])])
    check = check_orientation(some, real)
    assert check.excess["upside down"] >= 0.15 and round(check.shares["upside down"] * 40) >= 10
    assert "upside down" not in check.turned()  # 12 of 40: fewer than the images as stored
    few = np.concatenate([_copies(rng, real[:8], lambda x: x[:, ::-1]), _copies(rng, real[8:20])])
    check = check_orientation(few, real)
    assert check.excess[MIRRORED] >= 0.15 and MIRRORED not in check.turned()  # 8 votes: fewer than 10
    more = np.concatenate([_copies(rng, real[:12], lambda x: x[:, ::-1]), _copies(rng, real[12:40])])
    assert list(check_orientation(more, real).turned()) == [MIRRORED]  # 12 of 40, no majority needed


def test_turn_back_undoes_every_turn_and_a_whole_set_is_named_for_it():
    x = np.random.default_rng(6).integers(0, 256, (3, 7, 7)).astype(np.uint8)
    kept = x.copy()
    for name, turn in ORIENTATIONS.items():
        back = turn_back(turn(torch.from_numpy(x)).numpy(), name)
        assert back.dtype == np.uint8 and np.array_equal(back, x), name
    assert np.array_equal(x, kept)  # the caller's array untouched
    with pytest.raises(ValueError):
        turn_back(x, "sideways")
    rng = np.random.default_rng(7)
    real = _slices(rng, 40)
    assert check_orientation(_copies(rng, real[:20], lambda r: np.rot90(r, -1)), real).set_turn() == "turned 90 degrees"
    assert check_orientation(_copies(rng, real[:20], lambda r: r[:, ::-1]), real).set_turn() is None  # mirrored:
    assert check_orientation(_copies(rng, real[:20]), real).set_turn() is None  # searched by align_nn, not turned


def _case(turn, seed=2, whole=False):
    """16 copies of the 16 members among 32 generated images, ``turn``ed; ``whole``: the 16 new images too."""
    rng = np.random.default_rng(seed)
    real = _slices(rng, 32)
    new = _slices(rng, 16)
    generated = np.concatenate([_copies(rng, real[:16], turn), np.stack([turn(x) for x in new]) if whole else new])
    labels = np.r_[np.ones(16), np.zeros(16)].astype(int)
    return generated, real, labels


def test_detect_searches_mirrored_copies_when_the_generated_images_are_mirrored():
    generated, real, labels = _case(lambda x: x[:, ::-1])
    opts = {"align_size": 64, "max_rotation": 0, "max_scale": 0}
    found = vitprint.detect(generated, real, labels=labels, detectors=("align_nn",), options=opts, n_boot=0)
    assert list(found.summary["orientation"]["generated"]["turned"]) == [MIRRORED]
    assert "align_nn searches mirrored copies too" in found.summary["set_up"][0]
    assert found.metrics["align_nn"]["metrics"]["roc_auc"] == 1.0 and found.verdict["verdict"] == "Leak detected"
    told = vitprint.detect(generated, real, labels=labels, detectors=("align_nn",), options={**opts, "mirror": False},
                           n_boot=0)
    assert "was told not to search" in told.summary["set_up"][0]
    assert told.metrics["align_nn"]["metrics"]["roc_auc"] < 0.8
    generated, real, labels = _case(lambda x: x)
    plain = vitprint.detect(generated, real, labels=labels, detectors=("align_nn",), options=opts, n_boot=0)
    assert plain.summary["orientation"]["generated"]["turned"] == {} and "set_up" not in plain.summary


def test_detect_turns_a_set_stored_a_quarter_turn_round_back_unless_told_to_keep_it():
    generated, real, labels = _case(lambda x: np.rot90(x, -1), whole=True)  # a whole set stored another way
    opts = {"align_size": 64, "max_rotation": 0, "max_scale": 0}
    found = vitprint.detect(generated, real, labels=labels, detectors=("align_nn", "pixel_nn"), options=opts, n_boot=0)
    orientation = found.summary["orientation"]["generated"]
    assert list(orientation["turned"]) == ["turned 90 degrees"] and orientation["turned_back"] == "turned 90 degrees"
    assert "turned back before every detector" in found.summary["set_up"][0]
    assert found.metrics["align_nn"]["metrics"]["roc_auc"] == 1.0 and found.verdict["verdict"] == "Leak detected"
    assert found.metrics["pixel_nn"]["metrics"]["roc_auc"] > 0.75  # every detector sees the set turned back
    # each member's nearest generated image is its own copy, kept for the report's evidence the right way round
    assert np.array_equal(found.nearest["align_nn"][:16], np.arange(16))
    assert np.array_equal(found.generated_pixels, np.rot90(generated, 1, axes=(1, 2)))
    kept = vitprint.detect(generated, real, labels=labels, detectors=("align_nn", "pixel_nn"), options=opts, n_boot=0,
                           keep_orientation=True)
    assert "turned_back" not in kept.summary["orientation"]["generated"]
    assert "scored as stored, as asked" in kept.summary["set_up"][0]
    assert kept.metrics["align_nn"]["metrics"]["roc_auc"] < 0.75 and kept.metrics["pixel_nn"]["metrics"]["roc_auc"] < 0.6


def test_the_command_votes_per_generated_set_and_keeps_a_users_mirror_setting(tmp_path, monkeypatch):
    """Through ``vitprint detect`` with the development and test generated sets apart: only the test set is
    mirrored; it is said in evaluation.json's set-up, and mirror=false from the user is kept."""
    import functools
    import json

    from PIL import Image

    from vitprint.cli import main
    from vitprint.membership.detectors.align_nn import AlignNN

    searched = []  # what align_nn was built with, per run
    built = AlignNN.__init__

    @functools.wraps(built)  # the same signature: the job hands align_nn only the options it takes
    def spy(self, *args, **kw):
        built(self, *args, **kw)
        searched.append(self.mirror)

    monkeypatch.setattr(AlignNN, "__init__", spy)
    rng = np.random.default_rng(3)
    real = _slices(rng, 48)
    dev, test = tmp_path / "dev", tmp_path / "test"
    folders = {dev / "real_used": real[:12], dev / "real_not_used": real[12:24], test / "real_unknown": real[24:48],
               dev / "generated": _copies(rng, real[:12]),
               test / "generated": _copies(rng, real[24:36], lambda x: x[:, ::-1])}
    for folder, images in folders.items():
        folder.mkdir(parents=True)
        for i, img in enumerate(images):
            Image.fromarray(img).save(folder / f"{folder.name}_{i:02d}.png")
    common = ["detect", "--dev", str(dev), "--test", str(test), "--preset", "micro", "--image-size", "64",
              "--detectors", "align_nn", "--no-report", "--no-cache", "--bootstrap", "0", "--folds", "2",
              "--detector-option", "max_rotation=0", "--detector-option", "max_scale=0"]
    assert main([*common, "--out", str(tmp_path / "auto")]) == 0
    assert searched and all(searched)  # the vote turned the mirror search on
    searched.clear()
    summary = json.loads((tmp_path / "auto" / "evaluation.json").read_text())
    assert summary["orientation"]["development"]["turned"] == {}
    assert list(summary["orientation"]["test"]["turned"]) == [MIRRORED]
    assert any("of the test generated images match the real images best mirrored" in line
               and "align_nn searches mirrored copies too" in line for line in summary["set_up"])
    assert main([*common, "--out", str(tmp_path / "off"), "--detector-option", "mirror=false"]) == 0
    summary = json.loads((tmp_path / "off" / "evaluation.json").read_text())
    assert any("was told not to search mirrored copies" in line for line in summary["set_up"])
    assert searched and not any(searched)  # the user's setting kept


def test_the_command_turns_back_only_the_set_stored_another_way(tmp_path):
    """``vitprint detect`` with the test generated set upside down: that set alone is turned back (its copies then
    score above the uncopied images), the report's evidence is drawn from it, and --keep-orientation keeps it."""
    import csv
    import json

    from PIL import Image

    from vitprint.cli import main

    rng = np.random.default_rng(4)
    real = _slices(rng, 48)
    dev, test = tmp_path / "dev", tmp_path / "test"
    folders = {dev / "real_used": real[:12], dev / "real_not_used": real[12:24], test / "real_unknown": real[24:48],
               dev / "generated": _copies(rng, real[:12]), test / "generated": _copies(rng, real[24:36], lambda x: x[::-1])}
    for folder, images in folders.items():
        folder.mkdir(parents=True)
        for i, img in enumerate(images):
            Image.fromarray(img).save(folder / f"{folder.name}_{i:02d}.png")
    common = ["detect", "--dev", str(dev), "--test", str(test), "--preset", "micro", "--image-size", "64",
              "--detectors", "align_nn", "--no-cache", "--bootstrap", "0", "--folds", "2",
              "--detector-option", "max_rotation=0", "--detector-option", "max_scale=0"]

    def unknown_scores(out):
        with open(out / "scores.csv") as f:
            rows = [r for r in csv.DictReader(f) if r["group"] == "unknown"]
        by_name = {Path(r["path"]).name: float(r["align_nn"]) for r in rows}
        copied = [v for k, v in by_name.items() if int(k[-6:-4]) < 12]
        return copied, [v for k, v in by_name.items() if int(k[-6:-4]) >= 12]

    assert main([*common, "--out", str(tmp_path / "auto")]) == 0
    summary = json.loads((tmp_path / "auto" / "evaluation.json").read_text())
    assert "turned_back" not in summary["orientation"]["development"]
    assert summary["orientation"]["test"]["turned_back"] == "upside down"
    assert any("of the test generated images match the real images best upside down" in line
               and "turned back before every detector" in line for line in summary["set_up"])
    copied, other = unknown_scores(tmp_path / "auto")
    assert min(copied) > max(other)
    assert (tmp_path / "auto" / "report.html").is_file()
    assert main([*common, "--out", str(tmp_path / "kept"), "--keep-orientation", "--no-report"]) == 0
    summary = json.loads((tmp_path / "kept" / "evaluation.json").read_text())
    assert "turned_back" not in summary["orientation"]["test"]
    assert any("scored as stored, as asked (keep-orientation)" in line for line in summary["set_up"])
    copied, other = unknown_scores(tmp_path / "kept")
    assert not min(copied) > max(other)


def test_shifted_copies_of_nearly_symmetric_bodies_vote_as_they_are():
    """Copies shifted by 4-8% of the image (the benchmark's perturbation) of phantoms, which are nearly
    symmetric both ways: unaligned thumbnails voted 22% for the mirror image here and reported it; with each
    thumbnail centred on its body, every copy votes as stored, and an upside-down set is still found."""
    from vitprint.benchmark import SCALES, patients, perturb

    real = patients(0, 64, SCALES["cpu"], 7)
    shifted = perturb(np.concatenate([real[:32]] * 4), 0)
    check = check_orientation(shifted, real)
    assert check.shares["as stored"] > 0.9 and check.turned() == {} and check.set_turn() is None
    upside = check_orientation(np.ascontiguousarray(shifted[:, ::-1]), real)
    assert upside.shares["upside down"] > 0.9 and upside.set_turn() == "upside down"


def test_votes_that_carry_nothing_turn_nothing():
    """Texture without a body, copies shifted past recognition at 32 px, real images that are near-duplicate
    neighbours (so their own baseline is 100% as stored): the votes scatter, and copies of one image vote
    alike, so one turn gets a third of them by chance. That is no majority and not 15 points above an even
    share of the 8, so nothing is reported or turned back."""
    rng = np.random.default_rng(3)
    volume = gaussian_filter(rng.normal(size=(40, 48, 48)), 2)
    real = np.clip(128 + 60 * volume / volume.std(), 0, 255).astype(np.uint8)
    source = rng.choice(40, 12, replace=False)
    generated = []
    for i in range(40):
        dy, dx = rng.choice([-1, 1], 2) * rng.integers(4, 9, 2)
        shifted = np.roll(real[source[i % 12]].astype(float), (dy, dx), (0, 1))
        generated.append(np.clip(shifted + rng.normal(0, 8, shifted.shape), 0, 255))
    check = check_orientation(np.stack(generated).astype(np.uint8), real)
    top = max((k for k in check.shares if k != "as stored"), key=check.shares.get)
    # what an earlier rule (15 points above the real images' own 0%, 10 votes, more than as stored) reported
    assert check.baseline[top] == 0 and round(check.shares[top] * 40) >= 10
    assert check.shares[top] > check.shares["as stored"] + 0.15
    assert check.turned() == {} and check.set_turn() is None


def test_plan_for_a_set_turned_as_a_whole_with_mirrored_images_besides():
    """60% of the set a quarter turn round, 40% mirrored: the set is turned back as a whole (the majority), the
    mirror image is reported beside it, and the mirror search is not turned on for images turned back."""
    from vitprint.membership.scoring import plan_orientation

    rng = np.random.default_rng(8)
    real = _slices(rng, 40)
    generated = np.concatenate([_copies(rng, real[:24], lambda x: np.rot90(x, -1)),
                                _copies(rng, real[24:40], lambda x: x[:, ::-1])])
    found, mirror, lines, turns = plan_orientation({"generated": generated}, real, ("align_nn",), {})
    assert turns == {"generated": "turned 90 degrees"} and not mirror
    assert set(found["generated"]["turned"]) == {"turned 90 degrees", MIRRORED}
    assert any("the set is taken as turned 90 degrees" in line for line in lines)
    kept = plan_orientation({"generated": generated}, real, ("align_nn",), {}, keep_orientation=True)
    assert kept[3] == {} and kept[1]  # kept as stored: the mirrored images are searched for
