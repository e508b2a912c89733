"""Attribution (Subtask 2): which subset's generator made each generated image."""

import json
import shutil

import numpy as np
import pytest
from sklearn.metrics import f1_score

from vitprint.api.attribute import AttributeConfig, attribute
from vitprint.attribution.features import FeatureSpace, anatomy, texture
from vitprint.attribution.layout import resolve_attribution
from vitprint.attribution.methods import (
    ClusterMatch,
    EmbeddingClassifier,
    NearestSubset,
    NoneOfThese,
    best_correlation,
    typicality,
)
from vitprint.attribution_bench import cohort, run_attribution_benchmark, scanners, summarise
from vitprint.cli import main
from vitprint.data.phantoms import Scanner, save_palette_png
from vitprint.errors import VitprintError
from vitprint.evaluation.metrics import attribution_metrics
from vitprint.evaluation.runfile import parse_attribution_run, write_attribution_run

SIZE = 48


def _copy(images, rng):
    """A generator's near-copy: shifted a pixel or two, re-windowed, noisy."""
    out = []
    for img in images:
        x = np.roll(img.astype(np.float32), tuple(rng.integers(-2, 3, 2)), (0, 1)) * rng.uniform(0.92, 1.08)
        out.append(np.clip(x + rng.normal(0, 4, x.shape), 0, 255).astype(np.uint8))
    return np.stack(out)


def _cohorts(k=3, n=10, hard=True, seed=0):
    styles = scanners(k, hard)
    return [cohort(i, n, SIZE, styles[i], hard, seed) for i in range(k)]


def _stack(parts):
    return np.concatenate(parts), np.concatenate([np.full(len(p), i) for i, p in enumerate(parts)])


def test_features_shapes_and_invariance():
    imgs = _cohorts(1, 4)[0]
    a = anatomy(imgs)
    assert a.shape == (4, 1024)
    assert np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    bright = np.clip(imgs.astype(int) + 20, 0, 255).astype(np.uint8)  # a level shift barely moves the anatomy
    assert (anatomy(bright) * a).sum(1).min() > 0.95
    t = texture(imgs)
    assert t.shape == (4, 22) and np.isfinite(t).all()
    noisy = Scanner(noise=150.0)
    quiet = cohort(0, 4, SIZE, Scanner(noise=10.0), True, 1)
    loud = cohort(0, 4, SIZE, noisy, True, 1)
    assert (texture(loud)[:, 19] > texture(quiet)[:, 19]).all()  # the fine-grain residual sees the scanner


def _planted(n: int, seed: int):
    """Three cohorts of ``n`` patients and a near-copy of each: described reals, labels, copies, their labels."""
    rng = np.random.default_rng(seed)
    parts = _cohorts(3, n)
    real, y = _stack(parts)
    gen, y_gen = _stack([_copy(p, rng) for p in parts])
    space = FeatureSpace().fit(real)
    return space.describe(real), y, space.describe(gen), y_gen, rng


def test_planted_copies_are_attributed_to_their_subset():
    f_real, y, f_gen, y_gen, _ = _planted(10, 0)
    proba = NearestSubset(k=1).fit(f_real, y, 3).predict_proba(f_gen)
    assert (proba.argmax(1) == y_gen).mean() == 1.0
    cluster = ClusterMatch(seed=0).fit(f_gen.features, proba)
    assert cluster.predict_proba(f_gen.features).shape == (30, 3)


def test_shuffled_subset_labels_give_chance_accuracy():
    f_real, y, f_gen, y_gen, rng = _planted(30, 1)
    honest = (NearestSubset(k=1).fit(f_real, y, 3).predict_proba(f_gen).argmax(1) == y_gen).mean()
    shuffled = (NearestSubset(k=1).fit(f_real, rng.permutation(y), 3).predict_proba(f_gen).argmax(1) == y_gen).mean()
    assert honest == 1.0
    assert 0.15 < shuffled < 0.55  # 1/3 expected; 90 images
    # The classifier, trained on generated images with shuffled labels, is at chance on the others too.
    clf = EmbeddingClassifier().fit(f_gen.features[::2], rng.permutation(y_gen[::2]), 3)
    assert (clf.predict_proba(f_gen.features[1::2]).argmax(1) == y_gen[1::2]).mean() < 0.65


def test_cluster_match_recovers_distinct_scanners_in_any_order():
    styles = [Scanner(noise=15.0, grain=0.5, build=0.85), Scanner(noise=60.0, grain=1.1, build=1.0),
              Scanner(noise=140.0, grain=1.8, build=1.12)]
    parts = [cohort(i, 20, SIZE, styles[i], True, 8) for i in range(3)]
    real, y = _stack(parts)
    order = [2, 0, 1]  # the pool lists the subsets in another order: group ids mean nothing by themselves
    gen = np.concatenate([cohort(i, 20, SIZE, styles[i], True, 9) for i in order])
    y_gen = np.repeat(order, 20)
    space = FeatureSpace().fit(real)
    f_real, f_gen = space.describe(real), space.describe(gen)
    votes = NearestSubset().fit(f_real, y, 3).predict_proba(f_gen)
    pred = ClusterMatch(seed=0).fit(f_gen.features, votes).predict_proba(f_gen.features).argmax(1)
    assert (pred == y_gen).mean() >= 0.9


def test_without_labelled_images_none_of_these_falls_back_on_the_correlation_with_the_reals():
    rng = np.random.default_rng(2)
    parts = _cohorts(3, 20)
    real, _ = _stack(parts)
    space = FeatureSpace().fit(real)
    f_real = space.describe(real)
    own = best_correlation(f_real, f_real, exclude_self=True)  # the reals against each other, as attribute does
    assert own.shape == (60,) and own.max() < 0.999  # no image found itself
    none = NoneOfThese(0.05).fit(best_correlation(space.describe(_copy(real, rng)), f_real), "copies")
    others = cohort(7, 20, SIZE, Scanner(), True, 9)  # patients of no subset
    assert none.predict(best_correlation(space.describe(others), f_real)).mean() > 0.8
    assert none.predict(best_correlation(space.describe(_copy(real, rng)), f_real)).mean() < 0.2
    with pytest.raises(VitprintError):
        NoneOfThese(1.5)


def test_typicality_flags_another_scanners_images_and_few_of_the_known_generators():
    rng = np.random.default_rng(4)
    parts = [cohort(i, 30, SIZE, Scanner(noise=30.0 + 20 * i), True, 5) for i in range(2)]
    real = np.concatenate(parts)
    space = FeatureSpace().fit(real)
    known = space.transform(_copy(real[::2], rng))
    same = space.transform(_copy(real[1::2], rng))  # exchangeable with the known images
    other = space.transform(cohort(5, 30, SIZE, Scanner(noise=150.0, grain=2.0, build=0.8), True, 6))
    own, values = typicality(known, np.concatenate([same, other]))
    assert own.shape == (30,) and values.shape == (60,)
    flagged = NoneOfThese(0.05).fit(own, "known").predict(values)
    assert flagged[:30].mean() <= 0.2 and flagged[30:].mean() >= 0.8


def test_attribution_metrics_by_hand():
    y, p = np.array([0, 0, 1, 1, 2, 2]), np.array([0, 1, 1, 1, 2, 0])
    r = attribution_metrics(y, p, 3, n_boot=300, seed=0)
    assert r["metrics"]["accuracy"] == pytest.approx(4 / 6)
    assert r["metrics"]["macro_f1"] == pytest.approx(f1_score(y, p, average="macro"))
    assert r["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    lo, hi = r["intervals"]["macro_f1"]
    assert lo <= r["metrics"]["macro_f1"] <= hi
    assert attribution_metrics(y, y, 3, n_boot=0)["metrics"]["adjusted_rand"] == pytest.approx(1.0)


def test_run_file_round_trips(tmp_path):
    ids, subsets = [tmp_path / f"gen_{i}.png" for i in range(5)], ["a", "b", "a", "c", "b"]
    path = write_attribution_run(tmp_path / "run.txt", ids, subsets)
    assert path.read_text().splitlines()[0] == "gen_0,a"
    assert parse_attribution_run(path, ["a", "b", "c"]) == ([f"gen_{i}" for i in range(5)], subsets)
    with pytest.raises(VitprintError, match="line 2"):
        (tmp_path / "bad.txt").write_text("gen_0,a\ngen_1,zz\n")
        parse_attribution_run(tmp_path / "bad.txt", ["a", "b"])
    with pytest.raises(VitprintError):
        write_attribution_run(tmp_path / "x.txt", ids[:1], ["a,b"])


def _write(folder, images, stem):
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        save_palette_png(img, folder / f"{stem}_{i:03d}.png")


@pytest.fixture
def challenge(tmp_path):
    """The challenge's layout with planted copies: dev/real/<s>/, dev/generated/<s>/, test/generated/ + truth."""
    rng = np.random.default_rng(3)
    parts = _cohorts(3, 8)
    truth = []
    for k, p in enumerate(parts):
        _write(tmp_path / "dev" / "real" / f"s{k}", p, f"r{k}")
        _write(tmp_path / "dev" / "generated" / f"s{k}", _copy(p, rng), f"d{k}")
        pool = _copy(p, rng)
        _write(tmp_path / "test" / "generated", pool, f"g{k}")
        truth += [f"g{k}_{i:03d},s{k}" for i in range(len(pool))]
    (tmp_path / "truth.csv").write_text("\n".join(truth) + "\n")
    return tmp_path


def test_attribute_end_to_end(challenge):
    inputs = resolve_attribution(dev=challenge / "dev", test=challenge / "test")
    assert inputs.subsets == ["s0", "s1", "s2"] and inputs.pool_subsets is None
    s = attribute(inputs, AttributeConfig(out=str(challenge / "out"), image_size=SIZE, n_boot=50,
                                          truth=str(challenge / "truth.csv")))
    assert s["results"]["nearest"]["pool"]["metrics"]["accuracy"] == 1.0
    assert s["results"]["classifier"]["dev"]["metrics"]["n"] == 24
    dev_acc = {m: r["dev"]["metrics"]["accuracy"] for m, r in s["results"].items() if "dev" in r}
    assert set(dev_acc) == {"nearest", "classifier", "cluster"}
    assert s["method"] == max(("nearest", "classifier", "cluster"), key=lambda m: dev_acc[m])  # auto: best on dev
    ids, subsets = parse_attribution_run(challenge / "out" / "run.txt", inputs.subsets)
    assert len(ids) == 24 and all(i.startswith("g") for i in ids)
    rows = (challenge / "out" / "attribution.csv").read_text().splitlines()
    assert rows[0].startswith("id,path,predicted,run_subset,probability,best_correlation,truth,p_s0")
    assert len(rows) == 25
    ev = json.loads((challenge / "out" / "evaluation.json").read_text())
    assert ev["none_of_these"]["measure"] == "typicality"
    assert ev["none_of_these"]["calibrated_on"] == "the labelled generated images (leave-one-out)"
    assert ev["counts"]["pool_unread"] == []
    assert "Confusion matrix" in (challenge / "out" / "report.html").read_text()
    # Another method into the same folder is refused without --force (the run file would change silently).
    with pytest.raises(VitprintError, match="other inputs or settings"):
        attribute(inputs, AttributeConfig(out=str(challenge / "out"), image_size=SIZE, method="nearest", n_boot=0))


def test_labelled_pool_is_evaluated_and_a_pool_twin_of_a_dev_image_is_refused(challenge, tmp_path):
    inputs = resolve_attribution(real=challenge / "dev" / "real", generated=challenge / "dev" / "generated")
    assert inputs.pool_subsets is not None
    s = attribute(inputs, AttributeConfig(out=str(tmp_path / "o1"), image_size=SIZE, n_boot=0))
    assert s["results"]["nearest"]["pool"]["metrics"]["accuracy"] == 1.0
    assert "classifier" not in s["results"]  # no labelled development images: nothing to train it on
    assert s["method"] == "nearest"
    same_file = resolve_attribution(dev=challenge / "dev", generated=challenge / "dev" / "generated" / "s0")
    with pytest.raises(VitprintError, match="both labelled generated and pool"):
        attribute(same_file, AttributeConfig(out=str(tmp_path / "o2"), image_size=SIZE, n_boot=0))
    shutil.copytree(challenge / "dev" / "generated" / "s0", tmp_path / "twins")  # the same pixels, other files
    twin = resolve_attribution(dev=challenge / "dev", generated=tmp_path / "twins")
    with pytest.raises(VitprintError, match="both labelled generated and in the pool"):
        attribute(twin, AttributeConfig(out=str(tmp_path / "o3"), image_size=SIZE, n_boot=0))


def test_an_unreadable_pool_image_is_named_not_guessed(challenge, tmp_path):
    (challenge / "test" / "generated" / "broken.png").write_bytes(b"not a png")
    s = attribute(resolve_attribution(dev=challenge / "dev", test=challenge / "test"),
                  AttributeConfig(out=str(tmp_path / "o"), image_size=SIZE, n_boot=0))
    assert [p.endswith("broken.png") for p in s["counts"]["pool_unread"]] == [True]
    ids, _ = parse_attribution_run(tmp_path / "o" / "run.txt", ["s0", "s1", "s2"])
    assert len(ids) == 24 and "broken" not in ids
    assert "could not be read" in (tmp_path / "o" / "report.html").read_text()


def test_layout_errors(challenge, tmp_path):
    with pytest.raises(VitprintError, match="one sub-folder per subset"):
        resolve_attribution(real=challenge / "dev" / "real" / "s0", generated=challenge / "test" / "generated")
    other = tmp_path / "other" / "s9"
    _write(other, _cohorts(1, 2)[0], "x")
    _write(tmp_path / "other" / "s0", _cohorts(1, 2)[0], "y")
    with pytest.raises(VitprintError, match="not real subsets: s9"):
        resolve_attribution(real=challenge / "dev" / "real", dev_generated=tmp_path / "other")
    with pytest.raises(VitprintError, match="not an attribution development folder"):
        resolve_attribution(dev=challenge / "test")
    with pytest.raises(VitprintError, match="nothing to attribute"):
        resolve_attribution(real=challenge / "dev" / "real")
    dup = tmp_path / "dup"
    _write(dup / "s0", _cohorts(1, 1)[0], "same")
    _write(dup / "s1", _cohorts(1, 1)[0], "same")
    with pytest.raises(VitprintError, match="share the id"):
        resolve_attribution(real=challenge / "dev" / "real", generated=dup)


def test_cli_attribute_and_one_line_errors(challenge, capsys):
    rc = main(["attribute", "--dev", str(challenge / "dev"), "--test", str(challenge / "test"), "--truth",
               str(challenge / "truth.csv"), "--out", str(challenge / "cli"), "--image-size", str(SIZE),
               "--bootstrap", "0", "--method", "nearest", "--no-report", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0 and "nearest    on pool: accuracy 1.000" in out and "run file method: nearest" in out
    assert not (challenge / "cli" / "report.html").exists()
    rc = main(["attribute", "--real", str(challenge / "dev" / "real" / "s0"), "--generated", str(challenge / "test")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "one sub-folder per subset" in err
    assert main(["bench", "--task", "attribution", "--perturb", "--out", str(challenge / "b")]) == 2
    assert "--perturb belong" in capsys.readouterr().err
    assert main(["attribute", "--dev", str(challenge / "dev"), "--test", str(challenge / "test"), "--k", "0",
                 "--out", str(challenge / "k0")]) == 2
    assert "k must be >= 1" in capsys.readouterr().err


def test_make_cohorts_and_toy_benchmark(tmp_path, capsys):
    rc = main(["make-cohorts", "--out", str(tmp_path / "c"), "--subsets", "2", "--per-subset", "4", "--dev-images",
               "3", "--pool-images", "3", "--size", "32", "--gen-steps", "2", "--hard", "--quiet"])
    assert rc == 0
    assert main(["make-cohorts", "--out", str(tmp_path / "c"), "--subsets", "3", "--quiet"]) == 2  # not over old ones
    assert "not empty" in capsys.readouterr().err
    assert len(list((tmp_path / "c" / "dev" / "generated" / "subset2").glob("*.png"))) == 3
    assert len((tmp_path / "c" / "test_truth.csv").read_text().splitlines()) == 6
    results = run_attribution_benchmark("toy", tmp_path / "b", subsets=[2], seeds=1)
    assert len(results["cells"]) == 2  # easy and hard
    row = results["summary"]["K=2 hard"]
    assert set(row) >= {"nearest", "classifier", "cluster", "none: pool", "none: outsider"}
    again = run_attribution_benchmark("toy", tmp_path / "b", subsets=[2], seeds=1)  # resumes: nothing to redo
    assert again["cells"] == results["cells"]
    hard = next(c for c in results["cells"] if c["hard"])
    assert summarise(results["cells"])["K=2 hard"]["nearest"][0] == hard["methods"]["nearest"]["accuracy"]
    assert row["nearest"][3] == 1  # one seed: a mean, no interval
