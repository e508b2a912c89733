"""subspace: distance to the span of the generated images; its calibrated variant discounts what any such span explains."""

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from sklearn.metrics import roc_auc_score

from vitprint.errors import VitprintError
from vitprint.membership import create_detector


def _textures(rng, n, size=32, amplitude=60.0, smooth=1.2):
    x = np.stack([gaussian_filter(rng.normal(size=(size, size)), smooth) for _ in range(n)])
    return np.clip(128 + amplitude * x / x.std(), 0, 255).astype(np.uint8)


def _mixtures(rng, members, n, parts=3, noise=3.0):
    """Generated images that blend a few members each: near the members' span, a copy of none."""
    w = rng.dirichlet(np.ones(parts), n)
    pick = np.stack([rng.choice(len(members), parts, replace=False) for _ in range(n)])
    mix = (w[:, :, None, None] * members[pick].astype(np.float64)).sum(1)
    return np.clip(mix + rng.normal(0, noise, mix.shape), 0, 255).astype(np.uint8)


def test_subspace_ranks_the_members_a_generator_blends_first_and_sits_at_chance_otherwise():
    rng = np.random.default_rng(0)
    members, non = _textures(rng, 20), _textures(rng, 20)
    real, y = np.concatenate([members, non]), np.r_[np.ones(20), np.zeros(20)]
    det = create_detector("subspace", pixel_size=32).fit(_mixtures(rng, members, 200))
    scores, nearest = det.score_with_evidence(real)
    assert roc_auc_score(y, scores) == 1.0
    assert nearest.shape == (40,) and (scores <= 0).all()
    aucs = [roc_auc_score(y, create_detector("subspace", pixel_size=32).fit(_textures(rng, 200)).score_samples(real))
            for _ in range(3)]
    assert 0.3 < np.mean(aucs) < 0.7


def test_subspace_keeps_the_components_that_hold_the_asked_variance():
    rng = np.random.default_rng(1)
    generated = _textures(rng, 120)
    low = create_detector("subspace", pixel_size=32, subspace_variance=0.5).fit(generated)
    high = create_detector("subspace", pixel_size=32, subspace_variance=0.95).fit(generated)
    assert 1 <= low.rank_ < high.rank_ <= 119
    capped = create_detector("subspace", pixel_size=32, subspace_max_rank=10).fit(generated)
    assert capped.rank_ == 10
    # fitted on a seeded subset of a large set: the same subset each time
    a = create_detector("subspace", pixel_size=32, subspace_fit=50).fit(generated).score_samples(generated[:5])
    b = create_detector("subspace", pixel_size=32, subspace_fit=50).fit(generated).score_samples(generated[:5])
    np.testing.assert_array_equal(a, b)
    with pytest.raises(VitprintError, match="subspace_variance"):
        create_detector("subspace", subspace_variance=1.0)
    with pytest.raises(VitprintError, match="at least 3"):
        create_detector("subspace").fit(generated[:2])


def test_subspace_cal_discounts_images_that_any_subspace_of_their_kind_explains():
    rng = np.random.default_rng(2)
    members = _textures(rng, 20)
    copies = np.clip(members[rng.integers(0, 20, 150)] + rng.normal(0, 40, (150, 32, 32)), 0, 255).astype(np.uint8)
    # the generator also makes smooth images; smooth non-members lie in any span of smooth images
    generated = np.concatenate([copies, _textures(rng, 150, smooth=5.0)])
    real = np.concatenate([members, _textures(rng, 20, smooth=5.0)])
    y = np.r_[np.ones(20), np.zeros(20)]
    assert roc_auc_score(y, create_detector("subspace", pixel_size=32).fit(generated).score_samples(real)) < 0.1
    reference = np.concatenate([_textures(rng, 100), _textures(rng, 100, smooth=5.0)])
    cal = create_detector("subspace_cal", pixel_size=32).fit(generated, reference)
    assert roc_auc_score(y, cal.score_samples(real)) > 0.95
