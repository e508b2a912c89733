import numpy as np
import pytest

from vitprint.evaluation.metrics import binary_metrics, bootstrap_intervals, rates_from_counts, tpr_at_fpr
from vitprint.evaluation.truth import evaluate_run, read_truth


def test_binary_metrics_by_hand():
    y = [1, 1, 1, 0, 0, 0, 0, 1]
    p = [1, 1, 0, 0, 0, 1, 0, 1]
    m = binary_metrics(y, p)
    # tp=3 fn=1 fp=1 tn=3
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (3, 1, 1, 3)
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["precision"] == pytest.approx(3 / 4) and m["recall"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(0.75)
    # kappa = (po - pe) / (1 - pe), po = 0.75, pe = 0.5*0.5 + 0.5*0.5 = 0.5
    assert m["kappa"] == pytest.approx(0.5)


def test_threshold_free_metrics_by_hand():
    y = np.array([0, 0, 1, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8])
    m = binary_metrics(y, (s > 0.3).astype(int), s)
    assert m["roc_auc"] == pytest.approx(0.75)  # 3 of 4 (pos, neg) pairs ordered
    assert tpr_at_fpr(y, s, 0.0) == pytest.approx(0.5)  # only 0.8 is above every negative
    assert tpr_at_fpr(y, s, 0.5) == pytest.approx(1.0)


def test_bootstrap_intervals_contain_the_estimate_and_shrink_with_data():
    rng = np.random.default_rng(0)
    small_y, big_y = rng.integers(0, 2, 40), rng.integers(0, 2, 400)
    small_p = np.where(rng.random(40) < 0.8, small_y, 1 - small_y)
    big_p = np.where(rng.random(400) < 0.8, big_y, 1 - big_y)
    small, big = bootstrap_intervals(small_y, small_p, n_boot=300), bootstrap_intervals(big_y, big_p, n_boot=300)
    for y, p, ci in ((small_y, small_p, small), (big_y, big_p, big)):
        m = binary_metrics(y, p)
        for key in ("accuracy", "kappa", "f1"):
            assert ci[key][0] <= m[key] <= ci[key][1], key  # the same sample's estimate lies inside
    assert small["accuracy"][1] - small["accuracy"][0] > big["accuracy"][1] - big["accuracy"][0]


def test_the_bootstraps_rates_equal_scikit_learns_on_every_corner_case():
    rng = np.random.default_rng(1)
    cases = [(rng.integers(0, 2, n), rng.integers(0, 2, n)) for n in (2, 5, 30) for _ in range(40)]
    cases += [([0, 0, 0], [0, 0, 0]), ([1, 1], [1, 1]), ([0, 1], [1, 1]), ([0, 1], [0, 0]), ([1, 1, 0], [0, 0, 0])]
    for y, p in cases:
        m = binary_metrics(y, p)
        fast = rates_from_counts(m["tn"], m["fp"], m["fn"], m["tp"])
        for key, v in fast.items():
            assert float(v) == pytest.approx(m[key], abs=1e-12), (key, y, p)


def test_score_intervals_hold_the_estimate_and_say_nan_only_when_undefined():
    rng = np.random.default_rng(2)
    y = np.r_[np.ones(30), np.zeros(30)].astype(int)
    s = y + rng.normal(0, 1.0, 60)
    ci = bootstrap_intervals(y, (s > 0.5).astype(int), s, n_boot=300)
    m = binary_metrics(y, (s > 0.5).astype(int), s)
    for key in ("roc_auc", "average_precision", "accuracy"):
        assert ci[key][0] <= m[key] <= ci[key][1], key
    assert 0.5 < ci["roc_auc"][0] < ci["roc_auc"][1] < 1.0
    one_class = bootstrap_intervals(np.ones(5, int), np.ones(5, int), np.arange(5.0), n_boot=20)
    assert np.isnan(one_class["roc_auc"][0]) and one_class["accuracy"] == (1.0, 1.0)


def test_evaluate_run_against_a_truth_csv(tmp_path):
    (tmp_path / "truth.csv").write_text("id,label\na,1\nb,0\nc,1\nd,0\n")
    (tmp_path / "run.txt").write_text("a.png,1\nb.png,1\nc.png,1\nd.png,0\n")
    res, missing = evaluate_run(tmp_path / "run.txt", read_truth(tmp_path / "truth.csv"), n_boot=50)
    assert missing == 0 and res["run"]["metrics"]["accuracy"] == pytest.approx(0.75)


def test_run_files_are_read_by_one_parser_with_clear_errors(tmp_path):
    from vitprint.errors import VitprintError
    from vitprint.evaluation.runfile import parse_run

    truth = {"a": 1, "b": 0}
    rep = tmp_path / "rep.txt"
    rep.write_text("a,1\r\nb,0\r\na,0\r\n")
    with pytest.raises(VitprintError, match="line 3: 'a' repeats line 1"):
        evaluate_run(rep, truth, n_boot=0)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(VitprintError, match="is empty"):
        evaluate_run(empty, truth, n_boot=0)
    wide = tmp_path / "utf16.txt"
    wide.write_bytes("a,1\nb,0\n".encode("utf-16"))
    assert parse_run(wide) == (["a", "b"], [1, 0])
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\x89PNG\x00\xff\xfe\xfa")
    with pytest.raises(VitprintError, match="not a text file|expected"):
        parse_run(binary)


def test_evaluating_a_scores_file_keeps_cross_fitted_and_label_made_scores_out_of_the_verdict(tmp_path):
    """As in ``detect``: a `_cal` score (perhaps cross-fitted) or `pair` (learnt from the labels) is reported but
    neither tested for the verdict nor combined; ``detect``'s evaluation.json beside the file says which."""
    import json

    from vitprint.evaluation.truth import evaluate_file
    from vitprint.evaluation.verdict import LEAK, NO_EVIDENCE

    rng = np.random.default_rng(3)
    y = np.repeat([0, 1], 20)
    cols = {"honest": rng.normal(size=40), "honest_cal": 3.0 * y + rng.normal(size=40), "pair": 3.0 * y}
    lines = ["id,group,label,path," + ",".join(cols)]
    lines += [f"i{k},dev,{y[k]},i{k}.png," + ",".join(f"{v[k]:.6f}" for v in cols.values()) for k in range(40)]
    (tmp_path / "scores.csv").write_text("\n".join(lines) + "\n")
    ev = evaluate_file(scores=tmp_path / "scores.csv", folds=3, n_boot=0)
    assert ev["not_for_verdict"] == ["honest_cal", "pair"] and ev["verdict"]["verdict"] == NO_EVIDENCE
    assert ev["results"]["combined"]["metrics"]["roc_auc"] < 0.8
    assert ev["results"]["honest_cal"]["metrics"]["roc_auc"] > 0.9  # still reported
    # detect's record beside it: here the reference held no scored image, so honest_cal may decide
    (tmp_path / "evaluation.json").write_text(json.dumps({"not_for_verdict": ["pair"]}))
    ev = evaluate_file(scores=tmp_path / "scores.csv", folds=3, n_boot=0)
    assert ev["not_for_verdict"] == ["pair"] and ev["verdict"]["verdict"] == LEAK
    (tmp_path / "evaluation.json").unlink()
    only = ["id,group,label,path,honest_cal"] + [f"i{k},dev,{y[k]},i{k}.png,{cols['honest_cal'][k]:.6f}" for k in range(40)]
    (tmp_path / "scores.csv").write_text("\n".join(only) + "\n")
    from vitprint.errors import VitprintError

    with pytest.raises(VitprintError, match="may decide"):
        evaluate_file(scores=tmp_path / "scores.csv", folds=3, n_boot=0)
