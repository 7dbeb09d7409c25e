"""vistrain.evaluation.metrics / plots: every metric cross-checked against scikit-learn (or a hand
or loop computation), the absent-class policy, bootstrap intervals, JSON output and figures."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import (accuracy_score, balanced_accuracy_score, confusion_matrix,
                             f1_score, precision_recall_fscore_support, roc_auc_score,
                             top_k_accuracy_score)
from sklearn.preprocessing import label_binarize

from vistrain.evaluation.bootstrap import resample_prep, resample_scores
from vistrain.evaluation.fold_metrics import format_folds, summarize_folds
from vistrain.evaluation.metrics import compute_metrics
from vistrain.evaluation.tables import format_table

TOL = 1e-9


def make_data(seed, n, k, absent=(), signal=1.0, ties=True):
    """Labels drawn from the classes not in ``absent`` and softmax probabilities that favour the
    true class.  ``ties`` copies some rows onto others so that scores tie across samples."""
    rng = np.random.default_rng(seed)
    present = np.setdiff1d(np.arange(k), absent)
    y = rng.choice(present, size=n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += signal
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    if ties:
        src = rng.integers(0, n, size=n // 10)
        p[rng.integers(0, n, size=n // 10)] = p[src]
    return y, p, [f"c{i}" for i in range(k)]


def check_against_sklearn(m, y, p):
    """Assert that every point metric of ``m`` equals scikit-learn's on (y, p), all present."""
    k = p.shape[1]
    labels = np.arange(k)
    yp = p.argmax(axis=1)
    assert abs(m["accuracy"] - accuracy_score(y, yp)) < TOL
    assert abs(m["balanced_accuracy"] - balanced_accuracy_score(y, yp)) < TOL
    prec, rec, f1, sup = precision_recall_fscore_support(y, yp, labels=labels, zero_division=0)
    for i, row in enumerate(m["per_class"]):
        assert row["support"] == sup[i] and row["class"] == f"c{i}"
        assert abs(row["precision"] - prec[i]) < TOL
        assert abs(row["recall"] - rec[i]) < TOL and abs(row["f1"] - f1[i]) < TOL
    for avg in ("macro", "weighted"):
        ref = precision_recall_fscore_support(y, yp, labels=labels, average=avg, zero_division=0)
        for key, value in zip(("precision", "recall", "f1"), ref):
            assert abs(m[avg][key] - value) < TOL, (avg, key)
    if k == 2:
        auc = roc_auc_score(y, p[:, 1])
        assert abs(m["auc_roc"]["value"] - auc) < TOL and m["auc_roc"]["positive_class"] == "c1"
        assert all(abs(r["auc_roc"] - auc) < TOL for r in m["per_class"])
        assert m["top_k_accuracy"] == {"1": m["accuracy"]}
    else:
        for avg in ("macro", "weighted"):
            ref = roc_auc_score(y, p, multi_class="ovr", average=avg, labels=labels)
            assert abs(m[avg]["auc_roc"] - ref) < TOL and abs(m["auc_roc"][avg] - ref) < TOL
        for i, row in enumerate(m["per_class"]):
            assert abs(row["auc_roc"] - roc_auc_score(y == i, p[:, i])) < TOL
        assert set(m["top_k_accuracy"]) == {str(t) for t in (1, 5) if t < k}
        for t, value in m["top_k_accuracy"].items():
            assert abs(value - top_k_accuracy_score(y, p, k=int(t), labels=labels)) < TOL
    assert m["confusion_matrix"] == confusion_matrix(y, yp, labels=labels).tolist()
    np.testing.assert_allclose(m["confusion_matrix_normalized"],
                               confusion_matrix(y, yp, labels=labels, normalize="true"),
                               rtol=0, atol=TOL)


@pytest.mark.parametrize("k", [2, 3, 7])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_equal_sklearn(seed, k):
    y, p, names = make_data(seed, n=300 + 50 * seed, k=k)
    m = compute_metrics(y, p, names, n_bootstrap=0)
    assert m["n_samples"] == len(y) and m["n_classes"] == k and m["absent_classes"] == []
    check_against_sklearn(m, y, p)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_absent_class_policy(seed):
    k, absent = 6, [2, 4]
    y, p, names = make_data(seed, n=400, k=k, absent=absent, signal=0.5)
    yp = p.argmax(axis=1)
    present = np.setdiff1d(np.arange(k), absent)
    m = compute_metrics(y, p, names, n_bootstrap=0)
    assert m["absent_classes"] == ["c2", "c4"]
    for c in absent:
        row = m["per_class"][c]
        assert row["support"] == 0 and row["recall"] is None and row["f1"] is None
        assert row["auc_roc"] is None
        assert row["n_predicted"] == (yp == c).sum() > 0  # it is predicted: all false positives
        assert row["precision"] == 0.0
    # Macro averages are sklearn's computed on the present labels only.
    ref = precision_recall_fscore_support(y, yp, labels=present, average="macro", zero_division=0)
    for key, value in zip(("precision", "recall", "f1"), ref):
        assert abs(m["macro"][key] - value) < TOL
    ref_w = precision_recall_fscore_support(y, yp, labels=np.arange(k), average="weighted",
                                            zero_division=0)
    for key, value in zip(("precision", "recall", "f1"), ref_w):
        assert abs(m["weighted"][key] - value) < TOL  # absent classes weigh 0 anyway
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert abs(m["balanced_accuracy"] - balanced_accuracy_score(y, yp)) < TOL
    assert abs(m["balanced_accuracy"] - m["macro"]["recall"]) < TOL
    # OvR AUC over present classes: sklearn's binarized (multilabel) AUC on those columns.
    onehot = label_binarize(y, classes=present)
    for avg in ("macro", "weighted"):
        ref = roc_auc_score(onehot, p[:, present], average=avg)
        assert abs(m["auc_roc"][avg] - ref) < TOL and abs(m[avg]["auc_roc"] - ref) < TOL
    # Confusion matrix keeps every class in class_names order; absent rows normalize to zeros.
    assert m["confusion_matrix"] == confusion_matrix(y, yp, labels=np.arange(k)).tolist()
    assert all(v == 0.0 for c in absent for v in m["confusion_matrix_normalized"][c])
    assert abs(sum(m["confusion_matrix_normalized"][0]) - 1.0) < TOL


@pytest.mark.parametrize("k", [2, 4])
def test_single_class_labels(k):
    y, p, names = make_data(0, n=60, k=k, absent=list(range(1, k)))
    m = compute_metrics(y, p, names, n_bootstrap=50)
    assert m["auc_roc"]["value"] is None and m["macro"]["auc_roc"] is None
    assert "single class" in m["auc_roc"]["reason"]
    assert all(r["auc_roc"] is None for r in m["per_class"])
    assert m["ci95"]["macro_auc_roc"] == {"low": None, "high": None}
    assert m["ci95"]["accuracy"]["low"] is not None
    assert abs(m["accuracy"] - accuracy_score(y, p.argmax(1))) < TOL
    assert "AUC-ROC undefined" in format_table(m)


def test_ece_hand_computed():
    # 5 bins of width 0.2; a confidence on an edge belongs to the lower bin ((lo, hi]).
    probs = [[0.9, 0.05, 0.05],   # y=0 correct, conf 0.9 -> bin 4
             [0.8, 0.1, 0.1],     # y=1 wrong,   conf 0.8 -> bin 3 (edge)
             [0.3, 0.6, 0.1],     # y=1 correct, conf 0.6 -> bin 2 (edge)
             [0.4, 0.35, 0.25],   # y=2 wrong,   conf 0.4 -> bin 1 (edge)
             [0.1, 0.2, 0.7]]     # y=2 correct, conf 0.7 -> bin 3
    m = compute_metrics([0, 1, 1, 2, 2], probs, ["a", "b", "c"], n_bootstrap=0, ece_bins=5)
    # bin1 |0 - .4| * 1, bin2 |1 - .6| * 1, bin3 |.5 - .75| * 2, bin4 |1 - .9| * 1; / 5
    assert abs(m["ece"] - (0.4 + 0.4 + 0.5 + 0.1) / 5) < 1e-12
    rel = m["reliability"]
    assert rel["count"] == [0, 1, 1, 2, 1]
    assert rel["accuracy"] == [None, 0.0, 1.0, 0.5, 1.0]
    np.testing.assert_allclose(rel["confidence"][1:], [0.4, 0.6, 0.75, 0.9], atol=1e-12)
    assert rel["confidence"][0] is None
    np.testing.assert_allclose(rel["edges"], [0, 0.2, 0.4, 0.6, 0.8, 1.0], atol=1e-12)


@pytest.mark.parametrize("seed,bins", [(0, 15), (1, 10), (2, 7)])
def test_ece_matches_loop_reference(seed, bins):
    y, p, names = make_data(seed, n=500, k=4, signal=2.0)
    conf, correct = p.max(axis=1), (p.argmax(axis=1) == y)
    edges = np.linspace(0, 1, bins + 1)
    ece, counts = 0.0, []
    for b in range(bins):
        lo, hi = edges[b], edges[b + 1]
        inside = (conf > lo) & (conf <= hi) if b else (conf <= hi)
        counts.append(int(inside.sum()))
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - conf[inside].mean())
    m = compute_metrics(y, p, names, n_bootstrap=0, ece_bins=bins)
    assert abs(m["ece"] - ece) < 1e-12
    assert m["reliability"]["count"] == counts and sum(counts) == len(y)


@pytest.mark.parametrize("k,absent", [(2, []), (5, []), (5, [3])])
def test_bootstrap_resample_scores_equal_sklearn(k, absent):
    """The vectorised resample scorer gives sklearn's values on each resample (ties included)."""
    y, p, _ = make_data(3, n=150, k=k, absent=absent)
    yp = p.argmax(axis=1)
    prep = resample_prep(y, yp, p)
    idx = np.random.default_rng(0).integers(0, len(y), size=(4, len(y)))
    scores = resample_scores(idx, prep)
    for r in range(len(idx)):
        yr, pr, ypr = y[idx[r]], p[idx[r]], yp[idx[r]]
        present = np.unique(yr)
        assert abs(scores["accuracy"][r] - accuracy_score(yr, ypr)) < TOL
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert abs(scores["balanced_accuracy"][r] - balanced_accuracy_score(yr, ypr)) < TOL
        ref_f1 = f1_score(yr, ypr, labels=present, average="macro", zero_division=0)
        assert abs(scores["macro_f1"][r] - ref_f1) < TOL
        ref_auc = (roc_auc_score(yr, pr[:, 1]) if k == 2 else
                   np.mean([roc_auc_score(yr == c, pr[:, c]) for c in present]))
        assert abs(scores["macro_auc_roc"][r] - ref_auc) < TOL


def test_bootstrap_ci_contains_estimate_narrows_and_is_seeded():
    widths = []
    for n in (200, 4000):
        y, p, names = make_data(5, n=n, k=4, signal=1.5)
        m = compute_metrics(y, p, names, n_bootstrap=300, seed=1)
        point = {"accuracy": m["accuracy"], "balanced_accuracy": m["balanced_accuracy"],
                 "macro_f1": m["macro"]["f1"], "macro_auc_roc": m["macro"]["auc_roc"]}
        for name, value in point.items():
            ci = m["ci95"][name]
            assert ci["low"] <= value <= ci["high"], (n, name, ci, value)
        widths.append({name: m["ci95"][name]["high"] - m["ci95"][name]["low"] for name in point})
        assert m["bootstrap"] == {"method": "percentile", "level": 0.95, "n_resamples": 300,
                                  "seed": 1}
    for name in widths[0]:
        assert widths[1][name] < widths[0][name] / 2, name  # ~ 1/sqrt(20) narrower
    again = compute_metrics(y, p, names, n_bootstrap=300, seed=1)["ci95"]
    other = compute_metrics(y, p, names, n_bootstrap=300, seed=2)["ci95"]
    assert again == m["ci95"] and other != m["ci95"]
    none = compute_metrics(y, p, names, n_bootstrap=0)["ci95"]
    assert all(v == {"low": None, "high": None} for v in none.values())


def _assert_plain_json(obj, where="metrics"):
    if isinstance(obj, dict):
        for key, value in obj.items():
            assert type(key) is str, where
            _assert_plain_json(value, f"{where}.{key}")
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            _assert_plain_json(value, f"{where}[{i}]")
    else:
        assert obj is None or type(obj) in (str, int, float, bool), (where, type(obj))


@pytest.mark.parametrize("k,absent", [(2, []), (6, [1])])
def test_json_round_trip(k, absent):
    y, p, names = make_data(0, n=120, k=k, absent=absent)
    m = compute_metrics(y, p.astype(np.float32) / p.astype(np.float32).sum(1, keepdims=True),
                        names, n_bootstrap=20)
    _assert_plain_json(m)
    assert json.loads(json.dumps(m, allow_nan=False)) == m
    assert set(m) == {"n_samples", "n_classes", "class_names", "absent_classes", "accuracy",
                      "balanced_accuracy", "top_k_accuracy", "macro", "weighted", "per_class",
                      "auc_roc", "confusion_matrix", "confusion_matrix_normalized", "ece", "nll",
                      "reliability", "ci95", "bootstrap"}
    assert set(m["per_class"][0]) == {"class", "index", "support", "n_predicted", "precision",
                                      "recall", "f1", "auc_roc"}


def test_input_validation():
    y, p, names = make_data(0, n=20, k=3)
    with pytest.raises(ValueError, match="softmax"):
        compute_metrics(y, np.log(p), names)  # logits, not probabilities
    with pytest.raises(ValueError, match="class names"):
        compute_metrics(y, p, names[:2])
    with pytest.raises(ValueError, match="outside"):
        compute_metrics(np.full(20, 3), p, names)
    with pytest.raises(ValueError, match="0 samples"):
        compute_metrics([], np.zeros((0, 3)), names)


def test_format_table_is_aligned_and_complete():
    y, p, names = make_data(1, n=200, k=5, absent=[2])
    names = ["cat", "dog", "a_rather_long_class_name", "fox", "owl"]
    m = compute_metrics(y, p, names, n_bootstrap=100)
    text = format_table(m)
    lines = text.splitlines()
    assert "a_rather_long_class_name" in lines[0]  # absent classes are named in the headline
    ci = m["ci95"]["accuracy"]
    assert f"{m['accuracy']:.4f}  95% CI [{ci['low']:.4f}, {ci['high']:.4f}]" in text
    rows = [ln for ln in lines if ln.split() and ln.split()[0] in names]
    assert len(rows) == 5 and len({len(r) for r in rows}) == 1  # one aligned row per class
    absent_row = next(r for r in rows if r.startswith("a_rather_long_class_name"))
    assert absent_row.split()[1:] == ["0", str(m["per_class"][2]["n_predicted"]), "0.0000",
                                      "-", "-", "-"]
    assert any(ln.startswith("macro avg") for ln in lines)
    assert any(ln.startswith("weighted avg") for ln in lines)


def test_summarize_folds_mean_and_sample_std():
    folds = [compute_metrics(*make_data(s, n=100 + 10 * s, k=6, signal=1.0)[:2],
                             [f"c{i}" for i in range(6)], n_bootstrap=0) for s in range(4)]
    summary = summarize_folds(folds)
    assert summary["n_folds"] == 4 and summary["std_ddof"] == 1
    acc = [f["accuracy"] for f in folds]
    s = summary["metrics"]["accuracy"]
    assert abs(s["mean"] - np.mean(acc)) < TOL and abs(s["std"] - np.std(acc, ddof=1)) < TOL
    assert s["values"] == acc and s["n"] == 4
    top5 = summary["metrics"]["top_5_accuracy"]
    assert abs(top5["mean"] - np.mean([f["top_k_accuracy"]["5"] for f in folds])) < TOL
    assert set(summary["metrics"]) >= {"balanced_accuracy", "macro_f1", "macro_auc_roc", "ece"}
    # A fold where AUC is undefined is left out of that metric's mean and counted in n.
    single = compute_metrics(np.zeros(30, int), make_data(0, n=30, k=6)[1],
                             [f"c{i}" for i in range(6)], n_bootstrap=0)
    auc = summarize_folds(folds[:2] + [single])["metrics"]["macro_auc_roc"]
    assert auc["n"] == 2 and auc["values"][2] is None
    assert abs(auc["mean"] - np.mean([f["macro"]["auc_roc"] for f in folds[:2]])) < TOL
    text = format_folds(summary)
    assert "ddof=1" in text and f"{s['mean']:.4f} ± {s['std']:.4f}" in text
    json.dumps(summary, allow_nan=False)
    with pytest.raises(ValueError):
        summarize_folds([folds[0], compute_metrics([0, 1], [[.6, .4], [.3, .7]], ["x", "y"],
                                                   n_bootstrap=0)])


def test_plots_write_png(tmp_path):
    from vistrain.evaluation import plots
    for k, absent in ((2, []), (4, [2])):
        y, p, names = make_data(0, n=120, k=k, absent=absent)
        m = compute_metrics(y, p, names, n_bootstrap=0)
        cm = m["confusion_matrix"]
        paths = [plots.plot_confusion_matrix(cm, names, tmp_path / f"{k}/cm.png"),
                 plots.plot_confusion_matrix(cm, names, tmp_path / f"{k}/n.png", normalized=False),
                 plots.plot_roc_curves(y, p, names, tmp_path / f"{k}/roc.png"),
                 plots.plot_pr_curves(y, p, names, tmp_path / f"{k}/pr.png"),
                 plots.plot_reliability(m["reliability"], tmp_path / f"{k}/rel.png")]
        for path in paths:
            data = path.read_bytes()
            assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, path


def test_package_import_is_light():
    code = ("import sys, vistrain.evaluation, vistrain.evaluation.metrics, vistrain.evaluation.plots; "
            "heavy = [m for m in ('sklearn', 'matplotlib', 'torch') if m in sys.modules]; "
            "assert not heavy, heavy; "
            "assert callable(vistrain.evaluation.compute_metrics)")
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_nll_matches_scikit_learn_log_loss():
    from sklearn.metrics import log_loss
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=50)
    y = rng.integers(0, 4, size=50)
    m = compute_metrics(y, probs, list("abcd"), n_bootstrap=0)
    assert m["nll"] == pytest.approx(log_loss(y, probs, labels=np.arange(4)), rel=1e-9)
