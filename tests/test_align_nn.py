import numpy as np
from scipy.ndimage import gaussian_filter
from sklearn.metrics import roc_auc_score

from vitprint.membership import create_detector


def _textures(rng, n, size=64):
    """Smooth random 'slices': distinct fine detail per image, shared broad brightness."""
    x = np.stack([gaussian_filter(rng.normal(size=(size, size)), 1.5) for _ in range(n)])
    x = 128 + 60 * x / x.std()
    return np.clip(x, 0, 255).astype(np.uint8)


def _shifted_copy(img, rng):
    dy, dx = rng.integers(-3, 4, 2)
    x = np.roll(img.astype(float), (dy, dx), (0, 1)) * rng.uniform(0.9, 1.1) + rng.uniform(-10, 10)
    return np.clip(x + rng.normal(0, 4, x.shape), 0, 255).astype(np.uint8)


def test_shifted_rewindowed_noisy_copies_rank_first():
    rng = np.random.default_rng(0)
    real = _textures(rng, 24)
    members = np.arange(12)
    generated = np.concatenate([np.stack([_shifted_copy(real[i], rng) for i in members]), _textures(rng, 30)])
    y = np.isin(np.arange(24), members).astype(int)
    det = create_detector("align_nn", align_size=64, max_rotation=0).fit(generated)
    scores, nearest = det.score_with_evidence(real)
    assert roc_auc_score(y, scores) == 1.0
    assert (nearest[members] == np.arange(12)).all()
    assert scores[members].min() > 0.8 > scores[12:].max()  # a copy correlates; another image does not


def test_rotated_copies_are_found_with_the_rotation_search():
    from torchvision.transforms.v2 import functional as TF
    import torch

    rng = np.random.default_rng(1)
    real = _textures(rng, 16)
    turned = TF.rotate(torch.from_numpy(real[:8])[:, None], 7.0, interpolation=TF.InterpolationMode.BILINEAR)[:, 0]
    generated = np.concatenate([turned.numpy(), _textures(rng, 20)])
    y = np.r_[np.ones(8), np.zeros(8)]
    with_rot = create_detector("align_nn", align_size=64, max_rotation=9, rotation_step=3).fit(generated)
    without = create_detector("align_nn", align_size=64, max_rotation=0).fit(generated)
    assert roc_auc_score(y, with_rot.score_samples(real)) == 1.0
    assert with_rot.score_samples(real)[:8].mean() > without.score_samples(real)[:8].mean()


def test_independent_sets_are_at_chance():
    rng = np.random.default_rng(2)
    real, generated = _textures(rng, 40), _textures(rng, 40)
    y = np.r_[np.ones(20), np.zeros(20)]
    s = create_detector("align_nn", align_size=64, max_rotation=0).fit(generated).score_samples(real)
    assert 0.25 < roc_auc_score(y, s) < 0.75
