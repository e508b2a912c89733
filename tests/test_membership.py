import numpy as np
import pytest
import torch
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from vitprint.data.imageset import ImageSet
from vitprint.errors import VitprintError
from vitprint.membership import Detector, available_detectors, create_detector, register_detector
from vitprint.membership.decisions import Combiner, Threshold, cross_validate, fit_decision, select_primary
from vitprint.membership.knn import knn_distances
from vitprint.membership.scoring import ScoreConfig, compute_scores, score_names
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
    cfg = ScoreConfig(detectors=("recon", "latent_nn", "pixel_nn", "mc"), k=1, pixel_size=32, batch_size=8)
    scores = compute_scores(_set(real), _set(generated, "gen"), cfg.detectors, cfg.options(autoencoder=ae))
    for name in ("pixel_nn", "latent_nn"):
        top = set(np.argsort(-scores.values[name])[: len(copied)])
        assert top == set(copied), name
    # Exact copies are at distance ~0 (the one-matmul L2 leaves float32 rounding).
    assert np.allclose(scores.values["pixel_nn"][copied], 0, atol=0.05)
    assert list(scores.nearest["pixel_nn"][copied]) == [0, 1, 2, 3]
    assert scores.values["recon"].shape == (20,) and (scores.values["recon"] <= 0).all()
    assert "pixel_nn" in scores.peers and "recon" not in scores.peers
    assert scores.seconds.keys() == scores.values.keys() and all(v > 0 for v in scores.seconds.values())


def test_latent_nn_stores_the_generated_latents_and_a_changed_encoder_or_set_misses(tmp_path, monkeypatch):
    from vitprint.membership.detectors import latent_nn

    rng = np.random.default_rng(5)
    real = rng.integers(0, 256, (4, 32, 32), dtype=np.uint8)
    gen = rng.integers(0, 256, (10, 32, 32), dtype=np.uint8)
    torch.manual_seed(0)
    ae = Autoencoder(model_config("micro")).eval()
    calls = []
    real_encode = latent_nn.encode
    monkeypatch.setattr(latent_nn, "encode", lambda enc, px, *a: calls.append(len(px)) or real_encode(enc, px, *a))
    first = create_detector("latent_nn", autoencoder=ae, cache_dir=tmp_path).fit(gen).score_samples(real)
    again = create_detector("latent_nn", autoencoder=ae, cache_dir=tmp_path).fit(gen).score_samples(real)
    assert calls == [10, 4, 4] and np.array_equal(first, again)  # the generated set was encoded once
    with torch.no_grad():
        next(ae.encoder.parameters()).add_(0.01)  # another encoder: its own latents
    create_detector("latent_nn", autoencoder=ae, cache_dir=tmp_path).fit(gen)
    create_detector("latent_nn", autoencoder=ae, cache_dir=tmp_path).fit(gen[:9])  # other images too
    assert calls[3:] == [10, 9] and len(list((tmp_path / "latent_nn").glob("*.npy"))) == 3

def test_latent_l2_uses_k():
    rng = np.random.default_rng(4)
    real = rng.integers(0, 256, (6, 32, 32), dtype=np.uint8)
    gen = rng.integers(0, 256, (12, 32, 32), dtype=np.uint8)
    torch.manual_seed(0)
    ae = Autoencoder(model_config("micro")).eval()
    one = create_detector("latent_nn", autoencoder=ae, k=1, latent_metric="l2").fit(gen).score_samples(real)
    five = create_detector("latent_nn", autoencoder=ae, k=5, latent_metric="l2").fit(gen).score_samples(real)
    assert (five < one).all()  # the mean over 5 neighbours is farther than the nearest one


def test_calibrated_scores_subtract_the_reference_distance_and_equal_plain_when_reference_is_far():
    rng = np.random.default_rng(2)
    real = rng.integers(0, 256, (6, 16, 16), dtype=np.uint8)
    generated = rng.integers(0, 256, (10, 16, 16), dtype=np.uint8)
    far = np.zeros((8, 16, 16), np.uint8)  # every real image is far from this reference, at about the same distance
    cfg = ScoreConfig(detectors=("pixel_nn",), pixel_size=16)
    plain = compute_scores(real, generated, cfg.detectors, cfg.options())
    cal = compute_scores(real, generated, cfg.detectors, cfg.options(), reference=far)
    assert list(cal.values) == score_names(cfg.detectors, with_reference=True) == ["pixel_nn", "pixel_nn_cal"]
    d_far = np.sqrt(((real.astype(float) / 127.5) ** 2).sum((1, 2)))
    assert np.allclose(cal.values["pixel_nn_cal"], plain.values["pixel_nn"] + d_far, atol=1e-3)
    assert np.corrcoef(cal.values["pixel_nn_cal"], plain.values["pixel_nn"])[0, 1] > 0.5


def test_a_real_image_in_the_reference_is_cross_fitted_never_its_own_reference():
    """reference = non-members: each non-member would find itself at distance 0 and look like a member."""
    rng = np.random.default_rng(5)
    members = rng.integers(0, 256, (20, 16, 16), dtype=np.uint8)
    non = rng.integers(0, 256, (20, 16, 16), dtype=np.uint8)
    generated = rng.integers(0, 256, (40, 16, 16), dtype=np.uint8)  # copies nothing: no signal
    real = np.concatenate([members, non])
    y = np.r_[np.ones(20), np.zeros(20)]
    cfg = ScoreConfig(detectors=("pixel_nn",), pixel_size=16)
    s = compute_scores(real, generated, cfg.detectors, cfg.options(), reference=non)
    assert s.cross_fitted == {"pixel_nn_cal": 20}
    assert 0.25 < roc_auc_score(y, s.values["pixel_nn_cal"]) < 0.75
    # Without cross-fitting (the reference scored against itself) the same score separates perfectly,
    # for the wrong reason: that is what the wrapper prevents.
    plain = create_detector("pixel_nn", pixel_size=16)
    naive = plain.fit(generated).score_samples(real) - plain.fit(non).score_samples(real)
    assert roc_auc_score(y, naive) == 1.0


class _Brightness(Detector):
    name = "brightness_for_test"

    def fit(self, generated, reference=None):
        self.mean_ = float(np.asarray(generated).mean())
        return self

    def _score(self, real):
        return -np.abs(np.asarray(real, float).mean((1, 2)) - self.mean_), None


def test_a_new_detector_needs_only_its_class():
    register_detector(_Brightness)
    assert "brightness_for_test" in available_detectors()
    gen = np.full((4, 8, 8), 200, np.uint8)
    real = np.stack([np.full((8, 8), v, np.uint8) for v in (10, 190, 100)])
    scores = compute_scores(real, gen, ("brightness_for_test",), {"unused_option": 1})
    assert np.argmax(scores.values["brightness_for_test"]) == 1
    with pytest.raises(VitprintError, match="unknown detector 'nope'"):
        create_detector("nope")
    with pytest.raises(VitprintError, match="no calibrated variant"):
        create_detector("brightness_for_test_cal")


def test_threshold_maximises_kappa_by_hand():
    s = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    y = np.array([0, 0, 1, 0, 1, 1, 0, 1])
    t = Threshold().fit(s, y)
    # Hand check over every cut: the best kappa here is 0.5 (cut between 0.2 and 0.3).
    best = max(cohen_kappa_score(y, (s > c).astype(int)) for c in [0.0, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.8])
    assert best == pytest.approx(0.5)
    assert cohen_kappa_score(y, t.predict(s)) == pytest.approx(0.5)
    assert t.threshold_ == pytest.approx(0.25)


def test_kappas_at_every_cut_match_scikit_learn_bit_for_bit():
    # The threshold fit's one-pass kappas must be scikit-learn's, call by call, exactly (the same cut wins
    # ties), also with tied scores, cuts below and above every score (kappa undefined: 0) and uneven groups.
    from vitprint.membership.decisions import _kappa, kappas_at

    rng = np.random.default_rng(3)
    for n_pos, n_neg in ((5, 5), (7, 30), (64, 64), (200, 56), (1, 2)):
        y = np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]
        s = np.round(rng.normal(size=len(y)) + 0.8 * y, 1)  # rounded: many ties
        cuts = np.r_[s.min() - 1, np.sort(s), s.max() + 1, rng.uniform(-3, 3, 40)]
        got = kappas_at(s, y, cuts)
        want = np.array([_kappa(y, (s > c).astype(int)) for c in cuts])
        assert np.array_equal(got, want)
        assert got[0] == 0.0 and got[-41] == 0.0  # everything "used", nothing "used"


def test_threshold_for_a_target_fpr():
    neg = np.arange(100, dtype=float)
    s = np.concatenate([neg, [1000.0] * 10])
    y = np.concatenate([np.zeros(100), np.ones(10)])
    t = Threshold(target_fpr=0.05).fit(s, y)
    assert (t.predict(s[y == 0])).mean() <= 0.05
    assert t.threshold_ == 94.0  # 5 negatives (95..99) lie above it


def test_cross_validation_fits_out_of_fold():
    """A score that is perfect in-sample only: thresholds fitted on the image decided would look perfect.

    Each image's score sits between its class's neighbours in a way an
    in-sample threshold can exploit (alternating labels along the score), but
    out-of-fold thresholds cannot: in-sample accuracy 1.0 is impossible here
    for any single threshold, and out-of-fold accuracy must stay near chance.
    """
    y = np.tile([0, 1], 20)
    feats = {"a": np.arange(40, dtype=float)}  # labels alternate along the score: no threshold separates them
    cv = cross_validate(feats, y, folds=4)
    assert set(cv.decisions) == {"a", "combined", "auto"}
    assert (cv.decisions["a"] == y).mean() < 0.7
    rng = np.random.default_rng(3)
    y = np.repeat([0, 1], 20)
    feats = {"good": y + rng.normal(0, 0.5, 40), "noise": rng.normal(size=40)}
    cv = cross_validate(feats, y, folds=4)
    assert (cv.decisions["good"] == y).mean() > 0.7
    assert cv.auto_choices == ["good"] * 4
    assert (cv.decisions["auto"] == cv.decisions["good"]).all()
    with pytest.raises(VitprintError, match="at least 2"):
        cross_validate({"a": np.arange(3.0)}, np.array([0, 0, 1]))


def test_cross_validation_decides_with_thresholds_fitted_on_the_other_folds():
    """A case where in-sample and out-of-fold thresholds decide differently: the CV must give out-of-fold."""
    from sklearn.model_selection import StratifiedKFold

    y = np.repeat([0, 1], 6)
    s = y * 1.0 + np.random.default_rng(0).normal(0, 0.8, 12)
    cv = cross_validate({"s": s}, y, folds=3, seed=0)
    expected = np.zeros(12, int)
    for train, test in StratifiedKFold(3, shuffle=True, random_state=0).split(s[:, None], y):
        expected[test] = Threshold().fit(s[train], y[train]).predict(s[test])
    in_sample = Threshold().fit(s, y).predict(s)
    assert (expected != in_sample).sum() >= 2  # the case does tell the two apart
    assert (cv.decisions["s"] == expected).all()


def test_combiner_keeps_the_one_score_that_dominates_and_combines_scores_that_each_see_part():
    rng = np.random.default_rng(5)
    y = np.repeat([0, 1], 16)  # as few labelled images as a benchmark cell's fitting half
    # One score separates; twelve carry nothing. The regression fitted on 32 images spreads weight over the
    # useless ones; the rule keeps the good score alone, so its ranking is that score's.
    good = y * 3.0 + rng.normal(size=32)
    X = np.c_[rng.normal(size=(32, 6)), good, rng.normal(size=(32, 6))]
    comb = Combiner().fit(X, y)
    assert comb.choice_ == "single" and comb.column_ == 6
    assert np.array_equal(np.argsort(comb.decision_function(X)), np.argsort(good))
    assert comb.inner_auc_["single"] >= comb.inner_auc_["logistic"]
    assert np.flatnonzero(comb.weights).tolist() == [6]
    # Two scores that each find a different half of the used images: neither alone does; the sum does.
    half = np.r_[np.zeros(16), np.tile([1, 0], 8)]
    a = 3.0 * half + rng.normal(size=32)
    b = 3.0 * (y - half) + rng.normal(size=32)
    comb = Combiner().fit(np.c_[a, b], y)
    assert comb.choice_ == "logistic" and comb.column_ is None
    assert comb.inner_auc_["logistic"] > comb.inner_auc_["single"]
    assert (comb.weights > 0).all()
    rule = fit_decision({"a": a, "b": b}, y, "combined").to_dict()
    assert rule["combiner_choice"] == "logistic" and set(rule["combiner_inner_auc"]) == {"single", "logistic"}
    # Fewer labelled images of a group than scores: the regression is not judged, the best score is kept.
    few = np.r_[0:8, 16:24]
    comb = Combiner().fit(X[few], y[few])
    assert comb.inner_auc_ == {} and comb.kept([f"s{j}" for j in range(13)]) == "single: s6"
    wide = np.c_[a, b, rng.normal(size=(32, 14))]  # 16 scores, 16 images a group: judged, and combined
    comb = Combiner().fit(wide, y)
    assert set(comb.inner_auc_) == {"single", "logistic"} and comb.choice_ == "logistic"
    # The same 16 scores on 8 images a group: the regression the inner cross-validation would keep is not tried.
    comb = Combiner().fit(wide[few], y[few])
    assert comb.choice_ == "single" and comb.inner_auc_ == {}
    # One score: kept as it is, with nothing to cross-validate.
    comb = Combiner().fit(np.c_[-good], y)
    assert comb.kept(["g"]) == "single: g" and comb.inner_auc_ == {} and comb.weights.tolist() == [1.0]
    # Cross-validated, the combiner's rows are ranked within each fold, and what it kept is recorded per fold.
    cv = cross_validate({"a": a, "b": b}, y, folds=4)
    assert cv.combiner_choices == ["logistic"] * 4 and ((0 <= cv.scores["combined"]) & (cv.scores["combined"] <= 1)).all()


def test_combiner_is_robust_to_useless_scores_and_auto_picks_the_good_one():
    rng = np.random.default_rng(11)
    y = np.repeat([0, 1], 30)
    good = y * 1.5 + rng.normal(size=60)
    feats = {"good": good, **{f"noise{i}": rng.normal(size=60) for i in range(3)}}
    assert select_primary(feats, y) == "good"
    rule = fit_decision(feats, y, "auto")
    assert rule.primary == "good" and rule.combiner is None
    comb = fit_decision(feats, y, "combined").to_dict()
    w = comb["combiner_weights"]  # (the good score alone or the regression: a near tie on these images)
    assert w["good"] > max(abs(w[f"noise{i}"]) for i in range(3))
    # The regression itself, where it is kept, gives the useless scores little weight.
    _, w, _ = Combiner()._logistic(np.stack(list(feats.values()), 1), y)
    assert w[0] > 3 * np.abs(w[1:]).max()
    assert isinstance(Combiner().fit(np.c_[good], y).predict(np.c_[good]), np.ndarray)
    with pytest.raises(VitprintError, match="decision must be one of"):
        fit_decision(feats, y, "nope")


def test_reduced_settings_are_said_not_silent(caplog):
    rng = np.random.default_rng(9)
    real, gen = rng.integers(0, 256, (4, 16, 16), dtype=np.uint8), rng.integers(0, 256, (3, 16, 16), dtype=np.uint8)
    caplog.set_level("WARNING")
    s = compute_scores(real, gen, ("pixel_nn", "mc"), {"pixel_size": 16, "mc_k": 50})
    assert s.notes == ["mc_k=50 is more than the 3 generated images; 3 are used"] and "mc_k=50" in caplog.text
    cv = cross_validate({"a": np.arange(6.0)}, np.array([0, 0, 0, 1, 1, 1]), folds=10)
    assert cv.folds == 3 and "10 folds asked for" in caplog.text


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_every_index_answers_like_exact_search(metric):
    from vitprint.membership.knn import knn_distances

    rng = np.random.default_rng(0)
    base = rng.normal(size=(3000, 16)).astype(np.float32)
    queries = base[:200] + rng.normal(0, 0.05, (200, 16)).astype(np.float32)  # each near its own base vector
    d0, i0 = knn_distances(queries, base, k=3, metric=metric, progress=False)
    for index in ("flat", "ivf", "hnsw"):
        d, i = knn_distances(queries, base, k=3, metric=metric, progress=False, index=index)
        recall = (i[:, 0] == i0[:, 0]).mean()
        assert recall >= (1.0 if index == "flat" else 0.95), (index, recall)
        assert np.allclose(d[i[:, 0] == i0[:, 0], 0], d0[i[:, 0] == i0[:, 0], 0], atol=1e-4)
    with pytest.raises(VitprintError, match="index must be one of"):
        knn_distances(queries, base, index="kdtree")


@pytest.mark.parametrize("index", ["ivf", "hnsw"])
def test_an_approximate_index_is_stored_once_and_reused(index, tmp_path, monkeypatch, caplog):
    from vitprint.membership import knn

    rng = np.random.default_rng(2)
    base = rng.normal(size=(2000, 16)).astype(np.float32)
    queries = base[:50] + rng.normal(0, 0.05, (50, 16)).astype(np.float32)
    first = knn.knn_distances(queries, base, k=2, progress=False, index=index, store=tmp_path)
    stored = list(tmp_path.glob(f"{index}-*.faiss"))
    assert len(stored) == 1
    built = []
    monkeypatch.setattr(knn, "_build", lambda *a: built.append(a) or pytest.fail("built again"))
    with caplog.at_level("INFO"):
        again = knn.knn_distances(queries, base, k=2, progress=False, index=index, store=tmp_path)
    assert "reusing the stored" in caplog.text and not built
    assert np.array_equal(first[1], again[1]) and np.array_equal(first[0], again[0])
    monkeypatch.undo()
    other = base.copy()
    other[7] += 1  # other vectors: another index, the first one kept
    knn.knn_distances(queries, other, k=2, progress=False, index=index, store=tmp_path)
    assert len(list(tmp_path.glob(f"{index}-*.faiss"))) == 2
    stored[0].write_bytes(b"not an index")  # damaged: rebuilt with a warning, same answer
    caplog.clear()
    again = knn.knn_distances(queries, base, k=2, progress=False, index=index, store=tmp_path)
    assert "damaged" in caplog.text and np.array_equal(first[1], again[1])
    # The exact searches keep nothing.
    knn.knn_distances(queries, base, k=2, progress=False, index="flat", store=tmp_path / "flat")
    assert not (tmp_path / "flat").exists()


def test_ivf_codes_embeddings_of_a_large_enough_set_and_searches_in_query_chunks(monkeypatch):
    """IVF scans product codes (re-ranked exactly) for a set large enough to train them, flat lists for a
    tiny set (10 vectors: too few for the codes' k-means); the queries go to FAISS in chunks, same answer."""
    import faiss

    from vitprint.membership import knn

    rng = np.random.default_rng(4)
    built = []
    real_build = knn._build
    monkeypatch.setattr(knn, "_build", lambda *a: built.append(real_build(*a)) or built[-1])
    tiny = rng.normal(size=(10, 16)).astype(np.float32)
    d, i = knn.knn_distances(tiny + 0.01, tiny, k=2, progress=False, index="ivf")
    assert (i[:, 0] == np.arange(10)).all() and not isinstance(built[-1], faiss.IndexRefine)
    base = rng.normal(size=(2000, 16)).astype(np.float32)
    queries = base[:300] + rng.normal(0, 0.05, (300, 16)).astype(np.float32)
    whole = knn.knn_distances(queries, base, k=3, progress=False, index="ivf", metric="cosine")
    assert isinstance(built[-1], faiss.IndexRefine)
    exact = knn.knn_distances(queries, base, k=3, progress=False, metric="cosine")
    hit = whole[1][:, 0] == exact[1][:, 0]
    assert hit.mean() >= 0.95
    assert np.allclose(whole[0][hit, 0], exact[0][hit, 0], atol=1e-5)  # re-ranked: exact distances
    monkeypatch.setattr(knn, "QUERY_CHUNK", 64)
    chunked = knn.knn_distances(queries, base, k=3, progress=False, index="ivf", metric="cosine")
    assert np.array_equal(chunked[1], whole[1]) and np.allclose(chunked[0], whole[0])


def test_detectors_keep_their_approximate_index_in_the_cache(tmp_path):
    from vitprint.membership.registry import create_detector

    rng = np.random.default_rng(3)
    generated = rng.integers(0, 256, (300, 32, 32), dtype=np.uint8)
    real = generated[:10]
    det = create_detector("pixel_nn", pixel_size=16, index="ivf", cache_dir=str(tmp_path))
    first = det.fit(generated).score_samples(real)
    assert len(list((tmp_path / "index").glob("ivf-*.faiss"))) == 1
    again = create_detector("pixel_nn", pixel_size=16, index="ivf", cache_dir=str(tmp_path))
    assert np.array_equal(again.fit(generated).score_samples(real), first)
    assert len(list((tmp_path / "index").glob("ivf-*.faiss"))) == 1


def test_auto_index_is_exact_below_its_threshold_and_says_so_above(monkeypatch, caplog):
    from vitprint.membership import knn

    rng = np.random.default_rng(1)
    base = rng.normal(size=(500, 8)).astype(np.float32)
    exact = knn.knn_distances(base[:20], base, k=1, progress=False)
    assert np.array_equal(knn.knn_distances(base[:20], base, k=1, progress=False, index="auto")[1], exact[1])
    monkeypatch.setattr(knn, "AUTO_EXACT_BELOW", 100)
    with caplog.at_level("INFO"):
        _, idx = knn.knn_distances(base[:20], base, k=1, progress=False, index="auto")
    assert "FAISS's flat index (exact)" in caplog.text and np.array_equal(idx, exact[1])
    monkeypatch.setattr(knn, "AUTO_FLAT_MAX_BYTES", 1000)  # too many vectors to copy: streamed again
    caplog.clear()
    with caplog.at_level("INFO"):
        knn.knn_distances(base[:20], base, k=1, progress=False, index="auto")
    assert "flat index" not in caplog.text
