import numpy as np
from pathlib import Path
import pytest
from PIL import Image

from vitprint.detection.inputs import challenge_folder, resolve_inputs
from vitprint.evaluation.runfile import validate_run, write_run
from vitprint.errors import VitprintError
from vitprint.models.presets import model_config


def test_run_file_round_trip_and_validator(tmp_path):
    imgs = tmp_path / "real_unknown"
    imgs.mkdir()
    for i in range(4):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(imgs / f"real_unknown_{i:04d}.png")
    paths = sorted(imgs.iterdir())
    run = write_run(tmp_path / "run.txt", paths, [1, 0, 1, 0])
    assert run.read_text().splitlines()[0] == "real_unknown_0000,1"
    assert validate_run(run, imgs) == []
    named = write_run(tmp_path / "named.txt", paths, [1, 0, 1, 0], names=True)
    assert named.read_text().splitlines()[1] == "real_unknown_0001.png,0"
    assert validate_run(named, imgs) == []
    bad = tmp_path / "bad.txt"
    bad.write_text("real_unknown_0000,1\nreal_unknown_0000,0\nreal_unknown_0001,2\nnope,1\nreal_unknown_0002;1\n")
    problems = validate_run(bad, imgs)
    assert "line 2: 'real_unknown_0000' repeats line 1" in problems
    assert "line 3: label must be 0 or 1, got '2'" in problems
    assert "line 4: unknown image id 'nope'" in problems
    assert any(p.startswith("line 5: expected") for p in problems)
    assert problems[-1].startswith("missing 2 image(s): real_unknown_0002.png, real_unknown_0003.png")


def _challenge(root, dev=True):
    for name in ("generated", "real_used", "real_not_used") if dev else ("generated", "real_unknown"):
        (root / name).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / name / "a.png")
    return root


def test_challenge_layouts_are_found_and_mismatches_explained(tmp_path):
    dev, test = _challenge(tmp_path / "dev"), _challenge(tmp_path / "test", dev=False)
    assert set(challenge_folder(dev)) == {"generated", "real_used", "real_not_used"}
    inp = resolve_inputs(dev=str(dev), test=str(test))
    assert inp.labelled and inp.unknown == [test / "real_unknown"]
    # Apart by default (the test images against the test generated set); the development not-used
    # images are the reference unless turned off or given explicitly.
    assert inp.generated == [dev / "generated"] and inp.test_generated == [test / "generated"]
    assert inp.reference == [dev / "real_not_used"] and inp.reference_from_dev
    pooled = resolve_inputs(dev=str(dev), test=str(test), pool_generated=True, dev_reference=False)
    assert pooled.generated == [dev / "generated", test / "generated"] and not pooled.test_generated
    assert pooled.reference == [] and not pooled.reference_from_dev
    given = resolve_inputs(dev=str(dev), test=str(test), reference=[str(tmp_path / "dev" / "generated")])
    assert given.reference == [dev / "generated"] and not given.reference_from_dev
    with pytest.raises(VitprintError, match="expected generated/, real_used/"):
        challenge_folder(tmp_path)
    with pytest.raises(VitprintError, match="looks like a test folder"):
        resolve_inputs(dev=str(test))
    with pytest.raises(VitprintError, match="both members"):
        resolve_inputs(generated=[str(dev / "generated")], members=[str(dev / "real_used")])
    with pytest.raises(VitprintError, match="no generated images"):
        resolve_inputs(members=[str(dev / "real_used")], non_members=[str(dev / "real_not_used")])


def test_detect_reuses_its_autoencoder_only_for_the_same_generated_images(tmp_path):
    from vitprint.config import DataConfig
    from vitprint.api.job import DetectConfig, detect

    def folder(name, seed, n=8):
        d = tmp_path / name
        d.mkdir()
        rng = np.random.default_rng(seed)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(d / f"{name}_{i}.png")
        return d

    gen, mem, non, other = folder("gen", 0), folder("mem", 1), folder("non", 2), folder("other", 3)
    from vitprint.membership.scoring import ScoreConfig

    cfg = DetectConfig(out=str(tmp_path / "out"), ae_epochs=1, ae_batch_size=4, n_boot=10, folds=2, report=False,
                       scores=ScoreConfig(detectors=("recon", "latent_nn", "pixel_nn")))
    data = DataConfig(no_cache=True, val_fraction=0.25)
    detect(resolve_inputs(generated=[gen], members=[mem], non_members=[non]), model_config("micro"), cfg, data)
    ckpts = sorted((tmp_path / "out" / "autoencoder").rglob("*.safetensors"))
    mtimes = [p.stat().st_mtime_ns for p in ckpts]
    log_lines = (tmp_path / "out" / "autoencoder" / "metrics.jsonl").read_text().count("\n")
    detect(resolve_inputs(generated=[gen], members=[mem], non_members=[non]), model_config("micro"), cfg, data)
    assert ckpts and [p.stat().st_mtime_ns for p in ckpts] == mtimes  # reused, not retrained
    assert (tmp_path / "out" / "autoencoder" / "metrics.jsonl").read_text().count("\n") == log_lines
    with pytest.raises(VitprintError, match="trained on other generated images"):
        detect(resolve_inputs(generated=[other], members=[mem], non_members=[non]), model_config("micro"), cfg, data)


def test_inputs_refuse_two_files_with_one_id(tmp_path):
    for name in ("generated", "real_used", "real_not_used"):
        (tmp_path / name).mkdir()
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / name / "a.png")
    Image.fromarray(np.ones((8, 8), np.uint8)).save(tmp_path / "real_used" / "a.bmp")
    with pytest.raises(VitprintError, match="share the id 'a'"):
        resolve_inputs(dev=str(tmp_path))


def test_detect_checks_weights_and_output_before_work(tmp_path):
    from vitprint.api.job import DetectConfig

    with pytest.raises(VitprintError, match="encoder weights not found"):
        DetectConfig(encoder_weights=str(tmp_path / "missing.safetensors"))


def _challenge_like(tmp_path, unknown_names=("u_0.png", "u_1.png", "u_2.png", "u_3.png")):
    rng = np.random.default_rng(0)
    folders = {}
    for name, files in (("gen", [f"g_{i}.png" for i in range(12)]), ("used", [f"m_{i}.png" for i in range(4)]),
                        ("not_used", [f"n_{i}.png" for i in range(4)]), ("unknown", unknown_names)):
        d = tmp_path / name
        d.mkdir()
        for f in files:
            Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(d / f)
        folders[name] = d
    return folders


def _detect_args(f, out, *extra):
    return ["detect", "--generated", str(f["gen"]), "--members", str(f["used"]), "--non-members", str(f["not_used"]),
            "--unknown", str(f["unknown"]), "--detectors", "pixel_nn", "--preset", "micro", "--bootstrap", "0",
            "--pixel-size", "32", "--out", str(out), *extra]


def test_an_unreadable_unknown_image_is_answered_and_flagged_or_refused_when_strict(tmp_path, capsys, caplog):
    from vitprint.cli import main

    f = _challenge_like(tmp_path)
    (f["unknown"] / "u_4.png").write_bytes(b"\x89PNG broken")
    with caplog.at_level("WARNING"):
        assert main(_detect_args(f, tmp_path / "out")) == 0
    run = (tmp_path / "out" / "run.txt").read_text().splitlines()
    assert len(run) == 5 and "u_4,0" in run and validate_run(tmp_path / "out" / "run.txt", f["unknown"]) == []
    assert "could not be read" in caplog.text and "u_4.png" in caplog.text
    assert "u_4.png" in (tmp_path / "out" / "report.html").read_text()
    assert main(_detect_args(f, tmp_path / "strict", "--strict")) == 2
    assert "unreadable" in capsys.readouterr().err and not (tmp_path / "strict" / "scores.csv").exists()


def test_an_id_the_run_file_cannot_carry_is_refused_before_any_work(tmp_path, capsys):
    from vitprint.cli import main

    f = _challenge_like(tmp_path, ("u_0.png", "a,b.png"))
    assert main(_detect_args(f, tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert "cannot be ids in a run file" in err and "'a,b.png'" in err
    assert not (tmp_path / "out" / "scores.csv").exists()


def test_an_id_shared_by_two_roles_is_prefixed_in_the_tables_not_in_the_run_file(tmp_path, caplog):
    from vitprint.cli import main

    f = _challenge_like(tmp_path, ("u_0.png", "m_0.png"))  # m_0 is also a used image (other pixels)
    with caplog.at_level("WARNING"):
        assert main(_detect_args(f, tmp_path / "out")) == 0
    ids = [line.split(",")[0] for line in (tmp_path / "out" / "scores.csv").read_text().splitlines()[1:]]
    assert len(ids) == len(set(ids)) and {"member/m_0", "unknown/m_0"} <= set(ids)
    assert sorted(line.split(",")[0] for line in (tmp_path / "out" / "run.txt").read_text().split()) == ["m_0", "u_0"]
    assert "more than one role" in caplog.text


def _two_generators(tmp_path):
    """A development and a test folder whose generated images come from different generators: the dev
    generator copied the dev members *and the test non-members*, the test generator the test members."""
    rng = np.random.default_rng(3)
    px = {k: rng.integers(0, 256, (n, 32, 32), dtype=np.uint8)
          for k, n in (("dev_used", 6), ("dev_not", 6), ("test_used", 4), ("test_not", 4), ("noise", 6))}
    def save(folder, images, prefix):
        folder.mkdir(parents=True, exist_ok=True)
        for i, im in enumerate(images):
            Image.fromarray(im).save(folder / f"{prefix}_{i}.png")
    save(tmp_path / "dev" / "real_used", px["dev_used"], "du")
    save(tmp_path / "dev" / "real_not_used", px["dev_not"], "dn")
    save(tmp_path / "dev" / "generated", np.concatenate([px["dev_used"], px["test_not"], px["noise"]]), "dg")
    save(tmp_path / "test" / "real_unknown", np.concatenate([px["test_used"], px["test_not"]]), "u")
    save(tmp_path / "test" / "generated", np.concatenate([px["test_used"], px["noise"]]), "tg")
    return tmp_path / "dev", tmp_path / "test"


def test_dev_and_test_generated_sets_are_kept_apart_and_the_dev_not_used_images_are_the_reference(tmp_path):
    import shutil

    from vitprint.config import DataConfig
    from vitprint.api.job import DetectConfig, detect
    from vitprint.membership.scoring import ScoreConfig

    dev, test = _two_generators(tmp_path)
    data = DataConfig(no_cache=True)

    def run(out, **kw):
        cfg = DetectConfig(out=str(tmp_path / out), n_boot=0, folds=2, report=False, decision="pixel_nn",
                           scores=ScoreConfig(detectors=("pixel_nn",), pixel_size=32))
        summary = detect(resolve_inputs(dev=str(dev), test=str(test), **kw), model_config("micro"), cfg, data)
        rows = (tmp_path / out / "run.txt").read_text().split()
        return summary, {r.split(",")[0]: int(r.split(",")[1]) for r in rows}

    summary, calls = run("apart")
    # Each unknown image against the test generator's images only: its members called used, its
    # non-members (which only the development generator copied) not.
    assert [calls[f"u_{i}"] for i in range(8)] == [1, 1, 1, 1, 0, 0, 0, 0]
    # Each image's nearest generated file is in its own set: a copy's is its own copy.
    import csv

    near = {r["id"]: Path(r["nearest_generated"]) for r in csv.DictReader(open(tmp_path / "apart" / "decisions.csv"))}
    assert all(near[f"u_{i}"].parent == test / "generated" for i in range(8))
    assert [near[f"u_{i}"].name for i in range(4)] == [f"tg_{i}.png" for i in range(4)]
    assert all(near[f"du_{i}"] == dev / "generated" / f"dg_{i}.png" for i in range(6))
    assert all(near[f"dn_{i}"].parent == dev / "generated" for i in range(6))
    assert summary["generated_sets"] == {"development": 16, "test": 10, "apart": True}
    assert summary["generated"] == 26 and any("kept apart" in line for line in summary["set_up"])
    # The automatic reference: calibrated scores, each not-used image cross-fitted, none of them deciding.
    assert "pixel_nn_cal" in summary["detectors"] and summary["cross_fitted"] == {"pixel_nn_cal": 6}
    assert "pixel_nn_cal" in summary["not_for_verdict"]
    assert summary["reproduction"]["inputs"]["test_generated"]["images"] == 10
    _, pooled = run("pooled", pool_generated=True, dev_reference=False)
    assert [pooled[f"u_{i}"] for i in range(8)] == [1] * 8  # pooled, the dev generator's copies count too
    # A test generated/ folder that copies the development one is one set, not two.
    shutil.rmtree(test / "generated")
    shutil.copytree(dev / "generated", test / "generated")
    summary, _ = run("same", dev_reference=False)
    assert "generated_sets" not in summary and summary["generated"] == 16
    assert summary["set_up"] == ["The development and test generated/ folders hold the same images: one generated set."]


def test_the_dev_and_test_options_are_refused_without_both_folders(tmp_path, capsys):
    from vitprint.cli import main

    f = _challenge_like(tmp_path)
    for flag in ("--pool-generated", "--no-dev-reference"):
        assert main(_detect_args(f, tmp_path / "out", flag)) == 2
        assert "only with both --dev and --test" in capsys.readouterr().err
    assert not (tmp_path / "out" / "scores.csv").exists()


def test_with_generated_sets_apart_each_phase_sees_the_others_real_images_as_rivals(tmp_path):
    """A detector that judges real images against each other gets, in each pass, the real images the
    pass does not score (the other phase's), at its own image size; the others get nothing."""
    from vitprint.api.job import DetectConfig, detect
    from vitprint.config import DataConfig
    from vitprint.membership.base import Detector
    from vitprint.membership.registry import register_detector
    from vitprint.membership.scoring import ScoreConfig

    seen = []

    class _Spy(Detector):
        name = "others_spy_for_test"
        uses_others = True
        image_size = 16

        def fit(self, generated, reference=None):
            return self

        def _score(self, real, others=None):
            seen.append((len(real), None if others is None else others.shape))
            return np.arange(len(real), dtype=float), None

    register_detector(_Spy)
    dev, test = _two_generators(tmp_path)
    cfg = DetectConfig(out=str(tmp_path / "out"), n_boot=0, folds=2, report=False, decision="pixel_nn",
                       scores=ScoreConfig(detectors=("pixel_nn", "others_spy_for_test"), pixel_size=32))
    detect(resolve_inputs(dev=str(dev), test=str(test), dev_reference=False), model_config("micro"), cfg,
           DataConfig(no_cache=True))
    assert seen == [(12, (8, 16, 16)), (8, (12, 16, 16))]  # 6 + 6 labelled, then 8 unknown
