"""mc, domias and copy_nn: planted copies rank first, independent sets sit at chance."""

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from vitprint.membership import create_detector
from vitprint.membership.scoring import compute_scores


def _textures(rng, n, size=32):
    x = np.stack([gaussian_filter(rng.normal(size=(size, size)), 1.2) for _ in range(n)])
    return np.clip(128 + 60 * x / x.std(), 0, 255).astype(np.uint8)


def _noisy(img, rng, sigma=6.0):
    return np.clip(img + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8)


def test_mc_counts_generated_images_near_copied_members():
    rng = np.random.default_rng(0)
    real = _textures(rng, 20)
    generated = np.concatenate([np.stack([_noisy(real[i % 10], rng) for i in range(30)]), _textures(rng, 30)])
    y = np.r_[np.ones(10), np.zeros(10)]
    det = create_detector("mc", pixel_size=32, mc_k=10).fit(generated)
    s, nearest = det.score_with_evidence(real)
    assert roc_auc_score(y, s) == 1.0
    assert (nearest[:10] % 10 == np.arange(10)).all()
    independent = create_detector("mc", pixel_size=32).fit(_textures(rng, 40)).score_samples(real)
    assert 0.2 < roc_auc_score(y, independent) < 0.8


def test_domias_finds_over_represented_images_and_needs_a_reference():
    rng = np.random.default_rng(1)
    members, non = _textures(rng, 20), _textures(rng, 20)
    generated = np.concatenate([np.stack([_noisy(members[i % 20], rng, 3) for i in range(60)]), _textures(rng, 20)])
    reference = _textures(rng, 40)
    y = np.r_[np.ones(20), np.zeros(20)]
    det = create_detector("domias", pixel_size=32, domias_dims=4).fit(generated, reference)
    s = det.score_samples(np.concatenate([members, non]))
    assert roc_auc_score(y, s) > 0.8
    with pytest.raises(Exception, match="reference"):
        create_detector("domias").fit(generated)
    # Without a reference the pipeline skips it rather than failing.
    assert "domias" not in compute_scores(members, generated, ("domias", "pixel_nn"), {"pixel_size": 32}).values


def test_domias_survives_a_collapsed_generator(caplog):
    rng = np.random.default_rng(4)
    members, non = _textures(rng, 10), _textures(rng, 10)
    collapsed = np.repeat(members[:1], 30, 0)  # every generated image the same: a singular covariance
    with caplog.at_level("INFO"):
        det = create_detector("domias", pixel_size=32, domias_dims=4).fit(collapsed, _textures(rng, 30))
    s = det.score_samples(np.concatenate([members, non]))
    assert "all alike" in caplog.text and np.isfinite(s).all()
    assert s[0] == s.max()  # the one image the generator reproduces is the most over-represented


def test_domias_ranks_like_the_domias_package_on_the_same_features():
    baselines = pytest.importorskip("domias.baselines")
    rng = np.random.default_rng(2)
    generated, reference, real = _textures(rng, 60), _textures(rng, 60), _textures(rng, 30)
    inner = create_detector("domias", pixel_size=32, domias_dims=3).make()  # the detector itself, not cross-fitted
    inner.fit(generated, reference)
    ours = inner.score_samples(real)
    _, theirs = baselines.kde_baseline(inner.features(real), inner.features(generated), inner.features(reference))
    # Same densities (scipy gaussian_kde, Scott's rule); ours is the log of their ratio (no 1e-20 floor).
    assert spearmanr(ours, theirs).statistic > 0.999
    assert np.allclose(ours, np.log(theirs), atol=1e-6)


def test_copy_nn_ranks_shifted_rewindowed_copies_first():
    rng = np.random.default_rng(3)
    real = _textures(rng, 16, size=48)
    copies = []
    for i in range(8):
        dy, dx = rng.integers(-3, 4, 2)
        c = np.roll(real[i].astype(float), (dy, dx), (0, 1)) * rng.uniform(0.9, 1.1) + rng.uniform(-10, 10)
        copies.append(_noisy(np.clip(c, 0, 255), rng, 3))
    generated = np.concatenate([np.stack(copies), _textures(rng, 24, size=48)])
    y = np.r_[np.ones(8), np.zeros(8)]
    det = create_detector("copy_nn", copy_size=48, copy_steps=150, copy_width=8).fit(generated)
    s, nearest = det.score_with_evidence(real)
    assert roc_auc_score(y, s) >= 0.9
    assert (nearest[:8] == np.arange(8)).mean() >= 0.75


def test_copy_nn_reuses_its_cached_embedding(tmp_path, caplog):
    rng = np.random.default_rng(4)
    generated, real = _textures(rng, 12, size=32), _textures(rng, 4, size=32)
    opts = dict(copy_size=32, copy_steps=5, copy_width=8, cache_dir=tmp_path)
    first = create_detector("copy_nn", **opts).fit(generated)
    files = sorted(p.name for p in (tmp_path / "copy_nn").iterdir())
    mtimes = [p.stat().st_mtime_ns for p in (tmp_path / "copy_nn").iterdir()]
    caplog.set_level("INFO")
    second = create_detector("copy_nn", **opts).fit(generated)
    assert "reusing the embedding" in caplog.text
    assert not hasattr(second, "losses_")  # nothing was trained
    assert [p.stat().st_mtime_ns for p in (tmp_path / "copy_nn").iterdir()] == mtimes
    assert np.allclose(first.score_samples(real), second.score_samples(real), atol=1e-6)
    assert len(files) == 2
    (tmp_path / "copy_nn" / files[0]).write_bytes(b"")  # a damaged entry is rebuilt, not fatal
    third = create_detector("copy_nn", **opts).fit(generated)
    assert hasattr(third, "losses_")
    from vitprint.models.copy_net import CopyNet
    from vitprint.training.checkpoint import save_weights

    weights = next((tmp_path / "copy_nn").glob("*.safetensors"))
    save_weights(weights, CopyNet(4, 16), {"kind": "copy_net"})  # a readable network of another shape
    caplog.clear()
    fourth = create_detector("copy_nn", **opts).fit(generated)
    assert hasattr(fourth, "losses_") and "discarding" in caplog.text
    assert np.allclose(fourth.score_samples(real), third.score_samples(real), atol=1e-5)


def test_copy_nn_keys_its_stored_index_once_per_generated_set(tmp_path, monkeypatch):
    """With an approximate index kept in the cache, the generated embeddings are hashed once, not on every
    search; new embeddings (``fit_like``) get their own key."""
    from vitprint.membership import knn

    rng = np.random.default_rng(5)
    generated, real = _textures(rng, 60, size=32), _textures(rng, 4, size=32)
    keyed = []
    real_key = knn.content_key
    monkeypatch.setattr(knn, "content_key", lambda refs, chunk=None: keyed.append(len(refs)) or real_key(refs, chunk))
    det = create_detector("copy_nn", copy_size=32, copy_steps=5, copy_width=8, index="ivf", cache_dir=tmp_path)
    det.fit(generated)
    first = [det.score_samples(real[i:i + 1]) for i in range(len(real))]
    assert keyed == [60]
    assert len(list((tmp_path / "index").glob("ivf-*.faiss"))) == 1
    det.fit_like(det, generated[:50]).score_samples(real)  # the same detector, a new set: a new key
    det.score_samples(real)
    assert keyed == [60, 50] and len(first) == 4


class _SubspaceAE(__import__("torch").nn.Module):
    """An ideal small autoencoder: projects onto the top principal components of what it was trained on."""

    def __init__(self, pixels, dims=4):
        import torch
        from types import SimpleNamespace

        super().__init__()
        x = pixels.reshape(len(pixels), -1).astype(np.float64) / 127.5 - 1
        self.mean = torch.nn.Parameter(torch.tensor(x.mean(0), dtype=torch.float32), requires_grad=False)
        basis = np.linalg.svd(x - x.mean(0), full_matrices=False)[2][:dims]
        self.basis = torch.nn.Parameter(torch.tensor(basis, dtype=torch.float32), requires_grad=False)
        self.cfg = SimpleNamespace(image_size=pixels.shape[-1])
        self.summary = {"epochs": 1}

    def forward(self, x):
        flat = x.flatten(1) - self.mean
        return ((flat @ self.basis.T) @ self.basis + self.mean).reshape(x.shape)


def test_recon_cal_is_the_reference_models_error_minus_the_generated_ones(monkeypatch):
    """With ideal autoencoders (one per set), images like the generated set score high, images like the
    reference low; a real image that is also in the reference is scored by a model trained without it."""
    from vitprint.membership.detectors import recon_cal

    trained = []

    def fake_training(images, *args, **kwargs):
        trained.append(len(images))
        return _SubspaceAE(np.asarray(images))

    monkeypatch.setattr(recon_cal, "train_autoencoder", fake_training)
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[0:32, 0:32]

    def stripes(n, grid):
        return np.clip([128 + 100 * np.sin(rng.uniform(0.2, 0.4) * grid + rng.uniform(0, 6.3)) for _ in range(n)],
                       0, 255).astype(np.uint8)

    generated, reference = stripes(40, yy), stripes(40, xx)
    real = np.concatenate([stripes(10, yy), stripes(10, xx)])
    y = np.r_[np.ones(10), np.zeros(10)]
    gen_ae = _SubspaceAE(generated)
    det = create_detector("recon_cal", autoencoder=gen_ae, ref_folds=2).fit(generated, reference)
    assert roc_auc_score(y, det.score_samples(real)) == 1.0 and trained == [40]
    assert roc_auc_score(y, create_detector("recon", autoencoder=gen_ae).fit(generated).score_samples(real)) > 0.9
    # Half of the not-used images are also the reference: each fold's model is trained without them.
    mixed = np.concatenate([reference[:30], real[10:]])
    det = create_detector("recon_cal", autoencoder=gen_ae, ref_folds=2).fit(generated, mixed)
    s = det.score_samples(real)
    assert det.cross_fitted == 10 and trained[1:] == [40, 20, 20]
    assert roc_auc_score(y, s) == 1.0
    with pytest.raises(Exception, match="reference"):
        create_detector("recon_cal", autoencoder=gen_ae).fit(generated, None)


def test_the_best_region_is_the_copied_one_wherever_the_copy_was_moved():
    from vitprint.membership.regions import best_region

    rng = np.random.default_rng(5)
    real, gen = (_textures(rng, 1, 128)[0] for _ in range(2))
    gen = gen.copy()
    gen[20:68, 70:118] = real[25:73, 67:115]  # a 48-px region of the real slice, moved by (-5, +3)
    region = best_region(real, gen, window=0.25)  # 32-px tiles at a stride of 16: one lies inside the region
    assert region.shift == (5, -3) and region.ncc > 0.99
    assert 25 <= region.y <= 73 - 32 and 67 <= region.x <= 115 - 32
    a, b = region.crops(real, gen)
    assert np.array_equal(a, b)
    unrelated = best_region(real, _textures(rng, 1, 128)[0])
    assert unrelated.ncc < 0.7


def test_logan_scores_what_the_generator_over_represents_and_sits_at_chance_otherwise():
    rng = np.random.default_rng(6)
    # The generator copied the members, which are brighter than the reference's images; the
    # not-used images look like the reference.
    members = np.clip(_textures(rng, 20).astype(int) + 25, 0, 255).astype(np.uint8)
    non = _textures(rng, 20)
    generated = np.concatenate([np.stack([_noisy(members[i % 20], rng, 3) for i in range(60)])])
    reference = _textures(rng, 60)
    y = np.r_[np.ones(20), np.zeros(20)]
    real = np.concatenate([members, non])
    det = create_detector("logan", pixel_size=32, seed=0).fit(generated, reference)
    assert det.peer and roc_auc_score(y, det.score_samples(real)) > 0.95
    independent = create_detector("logan", pixel_size=32).fit(_textures(rng, 60), reference)
    assert 0.2 < roc_auc_score(y, independent.score_samples(np.concatenate([_textures(rng, 20), non]))) < 0.8
    with pytest.raises(Exception, match="reference"):
        create_detector("logan").fit(generated, None)


def _shifted_copies(rng, real, n):
    copies = []
    for i in range(n):
        dy, dx = rng.integers(-3, 4, 2)
        c = np.roll(real[i].astype(float), (dy, dx), (0, 1)) * rng.uniform(0.9, 1.1) + rng.uniform(-10, 10)
        copies.append(_noisy(np.clip(c, 0, 255), rng, 3))
    return np.stack(copies)


def test_pair_learns_copies_out_of_fold_and_sits_at_chance_on_independent_sets():
    rng = np.random.default_rng(11)
    real = _textures(rng, 32, size=48)
    y = np.r_[np.ones(16, int), np.zeros(16, int)]
    generated = np.concatenate([_shifted_copies(rng, real, 16), _textures(rng, 24, size=48)])
    opts = dict(copy_size=48, copy_steps=100, copy_width=8)
    det = create_detector("pair", **opts).fit(generated)
    with pytest.raises(Exception, match="learning from labelled"):
        det.score_samples(real)
    s, nearest = det.score_labelled(real, y, folds=4)
    assert roc_auc_score(y, s) >= 0.95
    # Out of fold: no labelled image is scored by the model fitted on all of them (which saw its label).
    feats, _ = det.features(real)
    assert not np.isclose(s, det.model_.decision_function(feats)).any()
    assert (nearest[:16] == np.arange(16)).mean() >= 0.75
    # Unknown images (-1) are scored by the model fitted on all labelled ones, which the detector keeps
    # (features of images scored together: each is judged against the others as rivals).
    part = np.r_[y[:12], -np.ones(4, int), y[16:28], -np.ones(4, int)]
    s2, _ = det.score_labelled(real, part, folds=4)
    assert np.allclose(s2[part < 0], det.model_.decision_function(det.features(real)[0])[part < 0])
    # The job's other real images are rivals too: more rivals can only lower the embedding margin over the
    # most alike of them (the region margin is then taken against that rival), the other features do not
    # change, and an image identical to a scored one is never its rival.
    alone, _ = det.features(real[:16])
    with_others, _ = det.features(real[:16], others=real[16:])
    assert np.allclose(alone[:, :6], with_others[:, :6]) and (with_others[:, 6] <= alone[:, 6] + 1e-6).all()
    assert (with_others[:, 6] < alone[:, 6] - 1e-6).any()
    assert np.allclose(det.features(real[:16], others=real[:16].copy())[0], alone)
    # Independent generated images: labels carry nothing the features can learn; out of fold it stays at chance.
    null = create_detector("pair", **opts).fit(_textures(rng, 40, size=48)).score_labelled(real, y, folds=4)[0]
    assert 0.2 < roc_auc_score(y, null) < 0.8


def test_pair_scores_are_reported_but_never_read_by_the_verdict():
    import vitprint
    from vitprint.errors import VitprintError

    rng = np.random.default_rng(12)
    real = _textures(rng, 24, size=48)
    y = np.r_[np.ones(12, int), np.zeros(12, int)]
    generated = np.concatenate([_shifted_copies(rng, real, 12), _textures(rng, 12, size=48)])
    opts = {"copy_size": 48, "copy_steps": 30, "copy_width": 8, "pixel_size": 48}
    # pair first: on ties the verdict would take the first detector listed, so this fails if pair is read.
    r = vitprint.detect(generated, real, labels=y, detectors=("pair", "pixel_nn"), n_boot=0, folds=3, options=opts)
    assert "pair" in r.scores and "pair" in r.summary["not_for_verdict"]
    assert r.verdict["primary"] == "pixel_nn"
    # pair alone could give no verdict at all: refused before any work, never tested in pixel_nn's place.
    with pytest.raises(VitprintError, match="could be tested for a verdict"):
        vitprint.detect(generated, real, labels=y, detectors=("pair",),
                        options={k: v for k, v in opts.items() if k != "pixel_size"})
    # Without labels there is nothing to learn: refused before any work.
    with pytest.raises(VitprintError, match="learns from labelled images"):
        vitprint.detect(generated, real, detectors=("pixel_nn", "pair"), assume_prevalence=0.5, options=opts)
