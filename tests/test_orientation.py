"""Whether the generated images are turned against the real ones, and what the job does about it."""

import numpy as np
from scipy.ndimage import gaussian_filter

import vitprint
from vitprint.data.orientation import MIRRORED, check_orientation


def _slices(rng, n, size=64):
    """Smooth random 'slices' with a brighter left half: the content has a left and a right."""
    x = np.stack([gaussian_filter(rng.normal(size=(size, size)), 1.5) for _ in range(n)])
    x = 128 + 40 * x / x.std()
    x[:, :, : size // 2] += 30
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
    half = np.concatenate([_copies(rng, real[:10], lambda x: x[:, ::-1]), _copies(rng, real[10:20])])
    assert list(check_orientation(half, real).turned()) == [MIRRORED]  # half of them: a generator trained with flips
    few = check_orientation(_copies(rng, real[:20], lambda x: x[:, ::-1]), real, max_generated=8)
    assert few.n_generated == 8 and few.n_real == 40 and list(few.turned()) == [MIRRORED]


def test_left_right_symmetric_images_report_no_turn():
    """Mirroring a symmetric image changes nothing: no share moves beyond the real images' own."""
    rng = np.random.default_rng(1)
    x = _slices(rng, 30).astype(float)
    real = ((x + x[:, :, ::-1]) / 2).astype(np.uint8)
    assert check_orientation(_copies(rng, real[:15], lambda r: r[:, ::-1]), real).turned() == {}


def _case(turn, seed=2):
    rng = np.random.default_rng(seed)
    real = _slices(rng, 32)
    generated = np.concatenate([_copies(rng, real[:16], turn), _slices(rng, 16)])
    labels = np.r_[np.ones(16), np.zeros(16)].astype(int)
    return generated, real, labels


def test_detect_searches_mirrored_copies_when_the_generated_images_are_mirrored():
    generated, real, labels = _case(lambda x: x[:, ::-1])
    opts = {"align_size": 64, "max_rotation": 0, "max_scale": 0}
    found = vitprint.detect(generated, real, labels=labels, detectors=("align_nn",), options=opts, n_boot=0)
    assert list(found.summary["orientation"]["generated"]["turned"]) == [MIRRORED]
    assert "align_nn also searched mirrored copies" in found.summary["set_up"][0]
    assert found.metrics["align_nn"]["metrics"]["roc_auc"] == 1.0 and found.verdict["verdict"] == "Leak detected"
    told = vitprint.detect(generated, real, labels=labels, detectors=("align_nn",), options={**opts, "mirror": False},
                           n_boot=0)
    assert "was told not to search" in told.summary["set_up"][0]
    assert told.metrics["align_nn"]["metrics"]["roc_auc"] < 0.8
    generated, real, labels = _case(lambda x: x)
    plain = vitprint.detect(generated, real, labels=labels, detectors=("align_nn",), options=opts, n_boot=0)
    assert plain.summary["orientation"]["generated"]["turned"] == {} and "set_up" not in plain.summary
