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
    assert np.array_equal(det.score_samples(real), scores)  # the same scores without the evidence search
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
    with pytest.raises(VitprintError, match="at least 1"):
        create_detector("subspace").fit(generated[:0])


def test_subspace_rank_is_the_fewest_components_that_hold_the_variance_and_the_distance_is_the_residual():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(3)
    generated, real = _textures(rng, 60), _textures(rng, 7)
    det = create_detector("subspace", pixel_size=16, subspace_variance=0.8).fit(generated)
    z = generated.reshape(60, 16, 2, 16, 2).astype(np.float64).mean((2, 4)).reshape(60, -1) / 127.5 - 1  # 2x2 area means
    held = np.cumsum(PCA().fit(z).explained_variance_ratio_)
    assert held[det.rank_ - 1] >= 0.8 > held[det.rank_ - 2]
    # the score is minus the least-squares residual of the image around the mean, in the kept components
    q = real.reshape(7, 16, 2, 16, 2).astype(np.float64).mean((2, 4)).reshape(7, -1) / 127.5 - 1
    basis = det.components_.T
    coef, *_ = np.linalg.lstsq(basis, (q - det.mean_).T, rcond=None)
    residual = (((q - det.mean_).T - basis @ coef) ** 2).sum(0)
    np.testing.assert_allclose(-det.score_samples(real), residual, rtol=1e-6)


def test_subspace_spans_a_point_for_one_image_or_identical_ones_and_calibrates_on_tiny_references():
    rng = np.random.default_rng(4)
    images = _textures(rng, 10)
    for generated in (images[:1], np.repeat(images[:1], 5, 0)):  # a collapsed generator: no variance to keep
        det = create_detector("subspace", pixel_size=32).fit(generated)
        assert det.rank_ == 0 and det.score_samples(images).argmax() == 0  # the image it reproduces is nearest
    # a two-image reference, and one that overlaps the scored images (cross-fitted folds of one image)
    for reference in (images[8:], images[4:7]):
        scores = create_detector("subspace_cal", pixel_size=32).fit(_textures(rng, 30), reference).score_samples(images[:6])
        assert np.isfinite(scores).all()


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


def test_subspace_on_another_generated_set_keeps_the_fitted_rank():
    rng = np.random.default_rng(5)
    first = create_detector("subspace", pixel_size=32).fit(_textures(rng, 80))
    other = _textures(rng, 150)
    assert create_detector("subspace", pixel_size=32).fit(other).rank_ != first.rank_  # a larger set keeps more
    like = create_detector("subspace", pixel_size=32).fit_like(first, other)
    assert like.rank_ == first.rank_ and len(like.components_) == first.rank_
    assert create_detector("subspace", pixel_size=32).fit(other).rank_ != first.rank_  # fit itself is unchanged
