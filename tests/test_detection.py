import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import cohen_kappa_score

from vitprint.data.imageset import ImageSet
from vitprint.detection.decisions import balanced_threshold, cross_validate, fit_threshold
from vitprint.detection.inputs import challenge_folder, resolve_inputs
from vitprint.detection.knn import knn_distances
from vitprint.detection.runfile import validate_run, write_run
from vitprint.detection.scores import ScoreConfig, compute_scores, score_names
from vitprint.errors import VitprintError
from vitprint.models.autoencoder import Autoencoder
from vitprint.models.presets import model_config


def _set(pixels, prefix="img"):
    return ImageSet([f"{prefix}_{i}.png" for i in range(len(pixels))], [None] * len(pixels), np.asarray(pixels))


def test_knn_matches_brute_force_across_chunks():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(37, 8)).astype(np.float32)
    r = rng.normal(size=(501, 8)).astype(np.float32)
    full = np.linalg.norm(q[:, None] - r[None], axis=2)
    d, i = knn_distances(q, r, k=3, metric="l2", query_chunk=10, ref_chunk=64, progress=False)
    assert np.allclose(d, np.sort(full, 1)[:, :3], atol=1e-4)
    assert (i[:, 0] == full.argmin(1)).all()
    cos = 1 - (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (r / np.linalg.norm(r, axis=1, keepdims=True)).T
    d, _ = knn_distances(q, r, k=2, metric="cosine", ref_chunk=100, progress=False)
    assert np.allclose(d, np.sort(cos, 1)[:, :2], atol=1e-5)


def test_copied_members_rank_first_for_the_distance_scores():
    rng = np.random.default_rng(1)
    real = rng.integers(0, 256, (20, 32, 32), dtype=np.uint8)
    copied = [2, 5, 11, 17]
    generated = np.concatenate([real[copied], rng.integers(0, 256, (30, 32, 32), dtype=np.uint8)])
    torch.manual_seed(0)
    ae = Autoencoder(model_config("micro")).eval()
    scores = compute_scores(_set(real), _set(generated, "gen"), ScoreConfig(k=1, pixel_size=32, batch_size=8), ae)
    for name in ("pixel_nn", "latent_nn"):
        top = set(np.argsort(-scores.values[name])[: len(copied)])
        assert top == set(copied), name
    # Exact copies are at distance ~0 (the one-matmul L2 leaves float32 rounding).
    assert np.allclose(scores.values["pixel_nn"][copied], 0, atol=0.05)
    assert list(scores.nearest["pixel_nn"][copied]) == [0, 1, 2, 3]
    assert scores.values["recon"].shape == (20,) and (scores.values["recon"] <= 0).all()


def test_calibrated_scores_subtract_the_reference_distance():
    rng = np.random.default_rng(2)
    real = rng.integers(0, 256, (6, 16, 16), dtype=np.uint8)
    generated = rng.integers(0, 256, (10, 16, 16), dtype=np.uint8)
    cfg = ScoreConfig(detectors=("pixel_nn",), pixel_size=16)
    plain = compute_scores(_set(real), _set(generated), cfg)
    ref = _set(real[:3])  # the first three reals are in the reference set: distance 0 there
    cal = compute_scores(_set(real), _set(generated), cfg, reference=ref)
    assert list(cal.values) == score_names(cfg.detectors, with_reference=True) == ["pixel_nn", "pixel_nn_cal"]
    assert np.allclose(cal.values["pixel_nn_cal"][:3], plain.values["pixel_nn"][:3], atol=1e-4)


def test_threshold_maximises_kappa_by_hand():
    s = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    y = np.array([0, 0, 1, 0, 1, 1, 0, 1])
    t = fit_threshold(s, y)
    # Hand check over every cut: the best kappa here is 0.5 (cut between 0.2 and 0.3).
    best = max(cohen_kappa_score(y, (s > c).astype(int)) for c in [0.0, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.8])
    assert best == pytest.approx(0.5)
    assert cohen_kappa_score(y, (s > t).astype(int)) == pytest.approx(0.5)
    assert t == pytest.approx(0.25)


def test_threshold_for_a_target_fpr():
    neg = np.arange(100, dtype=float)
    s = np.concatenate([neg, [1000.0] * 10])
    y = np.concatenate([np.zeros(100), np.ones(10)])
    t = fit_threshold(s, y, target_fpr=0.05)
    assert ((s[y == 0] > t).mean()) <= 0.05
    assert t == 94.0  # 5 negatives (95..99) lie above it
    assert balanced_threshold([1, 2, 3, 4]) == 2.5


def test_cross_validation_never_decides_an_image_with_its_own_threshold():
    rng = np.random.default_rng(3)
    y = np.repeat([0, 1], 20)
    feats = {"a": y + rng.normal(0, 0.5, 40), "b": rng.normal(size=40)}
    cv = cross_validate(feats, y, folds=4)
    assert set(cv.decisions) == {"a", "b", "combined"}
    assert (cv.decisions["a"] == y).mean() > 0.7
    with pytest.raises(VitprintError, match="at least 2"):
        cross_validate({"a": np.arange(3.0)}, np.array([0, 0, 1]))


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
    assert inp.generated == [dev / "generated", test / "generated"]
    with pytest.raises(VitprintError, match="expected generated/, real_used/"):
        challenge_folder(tmp_path)
    with pytest.raises(VitprintError, match="looks like a test folder"):
        resolve_inputs(dev=str(test))
    with pytest.raises(VitprintError, match="both --members"):
        resolve_inputs(generated=[str(dev / "generated")], members=[str(dev / "real_used")])
    with pytest.raises(VitprintError, match="no generated images"):
        resolve_inputs(members=[str(dev / "real_used")], non_members=[str(dev / "real_not_used")])


def test_detect_reuses_its_autoencoder_only_for_the_same_generated_images(tmp_path):
    from vitprint.config import DataConfig
    from vitprint.detection.pipeline import DetectConfig, detect

    def folder(name, seed, n=8):
        d = tmp_path / name
        d.mkdir()
        rng = np.random.default_rng(seed)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(d / f"{name}_{i}.png")
        return d

    gen, mem, non, other = folder("gen", 0), folder("mem", 1), folder("non", 2), folder("other", 3)
    cfg = DetectConfig(out=str(tmp_path / "out"), ae_epochs=1, ae_batch_size=4, n_boot=10, folds=2, report=False)
    data = DataConfig(no_cache=True, val_fraction=0.25)
    detect(resolve_inputs(generated=[gen], members=[mem], non_members=[non]), model_config("micro"), cfg, data)
    detect(resolve_inputs(generated=[gen], members=[mem], non_members=[non]), model_config("micro"), cfg, data)
    with pytest.raises(VitprintError, match="trained on other generated images"):
        detect(resolve_inputs(generated=[other], members=[mem], non_members=[non]), model_config("micro"), cfg, data)
