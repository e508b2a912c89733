import numpy as np
from scipy.ndimage import gaussian_filter
from sklearn.metrics import roc_auc_score

from vitprint.membership import create_detector


def _textures(rng, n, size=64):
    """Smooth random 'slices': distinct fine detail per image, shared broad brightness."""
    x = np.stack([gaussian_filter(rng.normal(size=(size, size)), 1.5) for _ in range(n)])
    x = 128 + 60 * x / x.std()
    return np.clip(x, 0, 255).astype(np.uint8)


def _shifted_copy(img, rng, shift=None):
    """A copy rolled by ``shift`` (drawn in [-3, 3] px per axis when not given), re-windowed, noisy."""
    dy, dx = rng.integers(-3, 4, 2) if shift is None else shift
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
    assert scores[members].min() > 0.5 > scores[12:].max()  # a copy's margin over its rivals is large
    raw = create_detector("align_nn", align_size=64, max_rotation=0, relative=False).fit(generated)
    assert raw.score_samples(real)[members].min() > 0.8 > raw.score_samples(real)[12:].max()  # a copy correlates


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


def test_degraded_copies_beat_sharp_copies_of_a_neighbour_only_with_the_relative_score():
    """Members' copies blurred, neighbours' sources copied sharp: the plain correlation ranks some
    neighbours above blurred copies' sources; the margin over the rival real image does not."""
    rng = np.random.default_rng(3)
    members = _textures(rng, 12)
    detail = _textures(rng, 12)
    neighbours = np.clip(members * 0.95 + (detail.astype(float) - 128) * 0.25 + 6, 0, 255).astype(np.uint8)
    real = np.concatenate([members, neighbours])

    def copy(img, blur):
        g = gaussian_filter(np.roll(img.astype(float), (2, 1), (0, 1)), blur)
        return np.clip(g + rng.normal(0, 2, g.shape), 0, 255).astype(np.uint8)

    generated = np.stack([copy(members[i], 1.8 if i < 6 else 0.0) for i in range(12)])
    y = np.r_[np.ones(12), np.zeros(12)]
    opts = {"align_size": 64, "max_rotation": 0, "max_scale": 0}
    plain = create_detector("align_nn", relative=False, **opts).fit(generated).score_samples(real)
    relative, nearest = create_detector("align_nn", **opts).fit(generated).score_with_evidence(real)
    assert roc_auc_score(y, plain) < 0.8
    assert roc_auc_score(y, relative) == 1.0
    assert (relative[:12] > 0).all() and (relative[12:] < 0).all()
    assert (nearest[:12] == np.arange(12)).all()


def test_the_jobs_other_real_images_are_rivals_too():
    """Copies of members whose sources are scored in another call (the other phase's images): without
    them, a neighbour of such a member has no rival for its neighbour's copy and looks used."""
    rng = np.random.default_rng(8)
    members = _textures(rng, 12)
    neighbours = np.clip(members * 0.95 + (_textures(rng, 12).astype(float) - 128) * 0.25 + 6, 0, 255).astype(np.uint8)
    def copy(img, blur):  # the scored members' copies degraded, the others' sharp
        g = gaussian_filter(np.roll(img.astype(float), (2, 1), (0, 1)), blur)
        return np.clip(g + rng.normal(0, 2, g.shape), 0, 255).astype(np.uint8)

    generated = np.stack([copy(m, 0.0 if i < 6 else 1.8) for i, m in enumerate(members)])
    scored = np.concatenate([members[6:], neighbours[:6]])  # neighbours of the members scored elsewhere
    others = np.concatenate([members[:6], neighbours[6:]])
    y = np.r_[np.ones(6), np.zeros(6)]
    det = create_detector("align_nn", align_size=64, max_rotation=0, max_scale=0).fit(generated)
    alone = det.score_samples(scored)
    with_others, nearest = det.score_with_evidence(scored, others)
    assert roc_auc_score(y, alone) < 0.8  # the lone neighbours take their neighbours' copies
    assert roc_auc_score(y, with_others) == 1.0
    assert (with_others[:6] > 0).all() and (with_others[6:] < 0).all()
    assert (nearest[:6] == np.arange(6, 12)).all() and len(with_others) == 12
    plain = create_detector("align_nn", align_size=64, max_rotation=0, max_scale=0, relative=False).fit(generated)
    np.testing.assert_array_equal(plain.score_samples(scored), plain.score_with_evidence(scored, others)[0])


def test_several_copies_add_up_and_a_repeated_generated_image_counts_once():
    rng = np.random.default_rng(9)
    real = _textures(rng, 16)
    opts = {"align_size": 64, "max_rotation": 0, "max_scale": 0}
    noise = _textures(rng, 20)
    one = np.concatenate([[_shifted_copy(real[0], rng)], noise])
    three = np.concatenate([[_shifted_copy(real[0], rng) for _ in range(3)], noise])
    repeated = np.concatenate([[one[0]] * 3, noise])
    s_one = create_detector("align_nn", **opts).fit(one).score_samples(real)
    s_three = create_detector("align_nn", **opts).fit(three).score_samples(real)
    s_rep = create_detector("align_nn", **opts).fit(repeated).score_samples(real)
    assert s_three[0] > 2 * s_one[0] > 1.0  # three copies, each won by their source
    assert abs(s_rep[0] - s_one[0]) < 0.1  # the same copy three times: once


def test_magnified_copies_are_found_with_the_scale_search():
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(4)
    real = _textures(rng, 16)
    x = torch.from_numpy(real[:8].astype(np.float32))[:, None]
    zoom = 1.08  # a crop of 85% of the side resized back: what a crop-and-resize augmentation does
    theta = torch.tensor([[1 / zoom, 0, 0], [0, 1 / zoom, 0]]).expand(8, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    magnified = F.grid_sample(x, grid, align_corners=False, padding_mode="border")[:, 0].round().numpy().astype(np.uint8)
    generated = np.concatenate([magnified, _textures(rng, 20)])
    y = np.r_[np.ones(8), np.zeros(8)]
    opts = {"align_size": 64, "max_rotation": 0, "relative": False}
    with_scale = create_detector("align_nn", max_scale=0.1, scale_step=0.05, **opts).fit(generated).score_samples(real)
    without = create_detector("align_nn", max_scale=0, **opts).fit(generated).score_samples(real)
    assert roc_auc_score(y, with_scale) == 1.0
    assert with_scale[:8].mean() > without[:8].mean() + 0.1


def test_identical_real_images_are_never_each_others_rival():
    from vitprint.membership.detectors.align_nn import rivals

    rows = np.array([0, 1, 2, 0])
    cols = np.array([7, 7, 7, 8])
    values = np.array([0.9, 0.9, 0.5, 0.4])
    same = np.array([0, 0, 1])  # real images 0 and 1 have the same pixels
    r = rivals(rows, cols, values, same)
    assert r[0] == 0.5 and r[1] == 0.5  # not each other's 0.9: the other image's 0.5
    assert r[2] == 0.9
    assert r[3] == -np.inf  # nobody else measured against generated image 8


def test_scores_do_not_depend_on_the_order_of_a_large_generated_set():
    """More generated images than one coarse step holds: the running top lists (each real image's
    candidates, each generated image's rivals) must merge across steps and chunks of real images."""
    rng = np.random.default_rng(6)
    real = _textures(rng, 40)
    generated = np.concatenate([np.stack([_shifted_copy(real[i], rng) for i in range(20)]), _textures(rng, 180)])
    opts = {"align_size": 64, "max_rotation": 0, "max_scale": 0}  # 3 chunks of real images, 4 steps
    s1, n1 = create_detector("align_nn", **opts).fit(generated).score_with_evidence(real)
    order = rng.permutation(len(generated))
    s2, n2 = create_detector("align_nn", **opts).fit(generated[order]).score_with_evidence(real)
    np.testing.assert_allclose(s1, s2, atol=1e-5)
    assert (order[n2] == n1).all()
    assert (n1[:20] == np.arange(20)).all() and s1[:20].min() > s1[20:].max()


def test_the_prefilter_keeps_the_copies_and_the_rivals():
    """A generated set larger than the prefilter: each real image's pose search sees only its likeliest
    few (by a shift-invariant spectrum signature), and the answer is the full search's."""
    rng = np.random.default_rng(7)
    real = _textures(rng, 30)
    members = np.arange(15)
    # Each member copied twice (shifted, re-windowed, noisy, one of them also turned 4 degrees), among
    # 170 unrelated images.
    turned = [np.asarray(__import__("scipy.ndimage", fromlist=["rotate"]).rotate(
        real[i].astype(float), 4, reshape=False, order=1, mode="nearest")).astype(np.uint8) for i in members]
    copies = [_shifted_copy(real[i], rng) for i in members] + [_shifted_copy(t, rng) for t in turned]
    generated = np.concatenate([np.stack(copies), _textures(rng, 170)])
    opts = {"align_size": 64, "max_rotation": 5, "rotation_step": 2.5, "max_scale": 0}
    full = create_detector("align_nn", prefilter=0, **opts).fit(generated)
    few = create_detector("align_nn", prefilter=24, **opts).fit(generated)
    assert few.signatures_ is not None and full.signatures_ is None
    s_full, n_full = full.score_with_evidence(real)
    s_few, n_few = few.score_with_evidence(real)
    y = np.isin(np.arange(30), members).astype(int)
    assert roc_auc_score(y, s_few) == 1.0
    assert all(n_few[i] in (i, i + 15) for i in members)  # the nearest generated image is one of its own copies
    plain = create_detector("align_nn", prefilter=24, relative=False, **opts).fit(generated).score_samples(real)
    assert roc_auc_score(y, plain) == 1.0  # the plain correlation through the shortlist too
    # A copy's rivals are sought among the real images that shortlisted it. Where some were, a member's two
    # copies add up as in the full search; where none shortlisted them, only the largest of its margins
    # over the stand-in rival (the median of its own candidates) counts.
    # one copy's margin is its correlation (under 1) less its rival's (about 0 for these unrelated images):
    # above 1.1, two copies' margins were added
    assert roc_auc_score(y, s_full) == 1.0 and s_full[members].min() > 1.1
    assert s_few[members].min() > 0.6 and np.median(s_few[members]) > 1.2
    import pytest

    with pytest.raises(ValueError, match="prefilter must be 0"):
        create_detector("align_nn", prefilter=8, candidates=16)


def test_the_local_correlation_follows_an_elastically_deformed_copy():
    """Each part of an elastically deformed copy moved by its own few pixels: one global shift aligns
    none of it well, the tile-wise shifts (``local_tile``) align all of it; unrelated images stay low."""
    from scipy.ndimage import map_coordinates

    rng = np.random.default_rng(12)
    size = 128
    real = _textures(rng, 16, size)
    yy, xx = np.mgrid[0:size, 0:size].astype(float)

    def deformed(img):
        field = [gaussian_filter(rng.normal(size=(size, size)), 10) for _ in range(2)]
        field = [4.0 * f / np.abs(f).max() for f in field]  # up to 4 px, smooth
        return np.clip(map_coordinates(img.astype(float), [yy + field[0], xx + field[1]], order=1), 0, 255).astype(np.uint8)

    generated = np.concatenate([np.stack([deformed(real[i]) for i in range(8)]), _textures(rng, 8, size)])
    opts = {"align_size": size, "max_rotation": 0, "max_scale": 0, "relative": False}
    local = create_detector("align_nn", **opts).fit(generated).score_samples(real)
    plain = create_detector("align_nn", local_tile=0, **opts).fit(generated).score_samples(real)
    assert local[:8].min() > 0.8 and (local[:8] - plain[:8]).min() > 0.1
    assert local[8:].max() < 0.5
    import pytest

    with pytest.raises(ValueError, match="local_shift < local_tile"):
        create_detector("align_nn", local_tile=8, local_shift=8)


def test_the_local_correlation_stays_a_correlation():
    """A faint patch inside a strong window: each tile's value is a normalised correlation in [-1, 1]."""
    import torch

    from vitprint.membership.detectors.align_nn import _local

    rng = np.random.default_rng(13)
    a = torch.from_numpy(rng.normal(size=(1, 32, 32)).astype(np.float32))
    a[0, 8:16, 8:16] = torch.from_numpy(1e-5 * rng.normal(size=(8, 8)).astype(np.float32))
    b = torch.zeros_like(a)
    b[0, 8:16, 8:16] = a[0, 8:16, 8:16] * 1e5
    v = float(_local(a, b, 8, 2)[0])
    assert 0.99 < v <= 1.0 + 1e-6  # the patch itself, at shift 0
    assert float(_local(a, a, 8, 2)[0]) > 0.999
    import pytest

    with pytest.raises(ValueError, match="larger than"):
        create_detector("align_nn", align_size=64, local_tile=300)


def test_a_tile_that_moves_pays_for_its_shift():
    """``local_penalty``: a tile's correlation at shift t costs penalty * |t|^2 / reach^2, so a copy moved
    by the whole reach keeps 1 - penalty, an unmoved copy keeps 1, and unrelated images lose their chance
    matches at large shifts."""
    import pytest
    import torch

    from vitprint.membership.detectors.align_nn import _local

    rng = np.random.default_rng(14)
    a = torch.from_numpy(rng.normal(size=(1, 32, 32)).astype(np.float32))
    moved = torch.roll(a, shifts=2, dims=1)  # every tile 2 px down: the whole reach (circular, exact)
    assert float(_local(a, moved, 8, 2, 0.1)[0]) == pytest.approx(0.9, abs=1e-4)
    diagonal = torch.roll(a, shifts=(2, -2), dims=(1, 2))  # |t|^2 = 2^2 + 2^2: twice the penalty
    assert float(_local(a, diagonal, 8, 2, 0.1)[0]) == pytest.approx(0.8, abs=1e-4)
    assert float(_local(a, a, 8, 2, 0.1)[0]) == pytest.approx(1.0, abs=1e-4)
    other = torch.from_numpy(rng.normal(size=(1, 32, 32)).astype(np.float32))
    assert float(_local(a, other, 8, 2, 0.1)[0]) < float(_local(a, other, 8, 2)[0])
    with pytest.raises(ValueError, match="local_penalty"):
        create_detector("align_nn", local_penalty=1.5)


def test_mirrored_copies_are_found_only_with_the_mirror_search():
    """A generator trained with random flips gives members back mirrored: the default search (CT's left and
    right differ) does not look for them; ``mirror=True`` does, through the prefilter too, and leaves the
    plain copies' scores where they were."""
    rng = np.random.default_rng(11)
    real = _textures(rng, 24)
    members = np.arange(12)
    mirrored = np.stack([_shifted_copy(real[i][:, ::-1], rng) for i in members])
    generated = np.concatenate([mirrored, _textures(rng, 30)])
    y = np.isin(np.arange(24), members).astype(int)
    opts = {"align_size": 64, "max_rotation": 0, "max_scale": 0}
    plain_search = create_detector("align_nn", **opts).fit(generated).score_samples(real)
    scores, nearest = create_detector("align_nn", mirror=True, **opts).fit(generated).score_with_evidence(real)
    assert roc_auc_score(y, plain_search) < 0.8
    assert roc_auc_score(y, scores) == 1.0 and (nearest[members] == members).all()
    few = create_detector("align_nn", mirror=True, prefilter=16, **opts).fit(generated)
    assert few.signatures_ is not None
    assert roc_auc_score(y, few.score_samples(real)) == 1.0  # the shortlist keeps the mirrored copies
    from vitprint.membership.detectors.align_nn import _transform

    floats = real[:3].astype(np.float32)  # float32 arrays reach the turn without a copy of their own
    before = floats.copy()
    np.testing.assert_array_equal(_transform(floats, 0.0, 1.0, [True, False, True])[0], before[0][:, ::-1])
    np.testing.assert_array_equal(floats, before)  # the caller's images are never mirrored in place
    import pytest

    from vitprint.errors import VitprintError

    for bad in ("false", 2):  # a string would be taken as true: refused instead
        with pytest.raises(VitprintError, match="mirror must be true or false"):
            create_detector("align_nn", mirror=bad)
    unmirrored = np.concatenate([np.stack([_shifted_copy(real[i], rng) for i in members]), _textures(rng, 30)])
    both = [create_detector("align_nn", mirror=m, **opts).fit(unmirrored).score_samples(real) for m in (False, True)]
    assert roc_auc_score(y, both[1]) == 1.0
    np.testing.assert_allclose(both[0][members], both[1][members], atol=0.05)


def test_the_searched_shifts_equal_those_of_the_whole_inverse_fft():
    """The correlation at the searched shifts, computed as a partial inverse DFT, is the full ``irfft2``'s at
    those shifts, in the same order, for even and odd sizes, with and without a shift search; so is its best
    over the shifts for every pair of two sets (the pose search's form)."""
    import torch

    gen = torch.Generator().manual_seed(0)
    for size, max_shift in ((64, 0.06), (33, 0.1), (48, 0.0), (256, 0.06)):
        det = create_detector("align_nn", align_size=max(size, 16), max_shift=max_shift)
        a = torch.fft.rfft2(torch.randn(2, 3, 1, size, size, generator=gen))
        b = torch.fft.rfft2(torch.randn(1, 1, 4, size, size, generator=gen))
        idx = det._shifts(size)
        whole = torch.fft.irfft2(a * b.conj(), s=(size, size)).index_select(-2, idx).index_select(-1, idx)
        part = det._shift_map(a, b, size)
        assert part.shape == whole.shape == (2, 3, 4, len(idx), len(idx))
        assert torch.allclose(part, whole, atol=1e-3 * float(whole.abs().max()))
        assert (part.flatten(-2).argmax(-1) == whole.flatten(-2).argmax(-1)).float().mean() > 0.95
        best = det._best_shift(a.flatten(0, 2), b.flatten(0, 2), size)  # every pair at once, max over shifts
        assert best.shape == (6, 4)
        assert torch.allclose(best, whole.flatten(-2).amax(-1).reshape(6, 4), atol=1e-3 * float(whole.abs().max()))


def test_copies_moved_by_up_to_a_tenth_of_the_image_are_found_by_default():
    """The default reach (10% of the side) covers a copy rolled by 5-6 px of 64; a 6% reach does not."""
    rng = np.random.default_rng(7)
    real = _textures(rng, 24)
    members = np.arange(12)
    moved = [_shifted_copy(real[i], rng, shift=rng.choice([-1, 1], 2) * rng.integers(5, 7, 2)) for i in members]
    generated = np.concatenate([np.stack(moved), _textures(rng, 30)])
    y = np.isin(np.arange(24), members).astype(int)
    wide = create_detector("align_nn", align_size=64, max_rotation=0, max_scale=0).fit(generated)
    scores, nearest = wide.score_with_evidence(real)
    assert roc_auc_score(y, scores) == 1.0 and (nearest[members] == np.arange(12)).all()
    narrow = create_detector("align_nn", align_size=64, max_rotation=0, max_scale=0, max_shift=0.06).fit(generated)
    assert roc_auc_score(y, narrow.score_samples(real)) < 0.9
