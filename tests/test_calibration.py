"""Temperature scaling: applied only where a cross-fit on val halves shows it helps; the fitted T minimises the NLL (checked against a dense grid and against
PyTorch's LBFGS on the logits), leaves every argmax alone, lowers ECE on over- and under-confident
models, and the NLL equals scikit-learn's log_loss."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss

import json

from conftest import make_image_folder
from vistrain.evaluation.bootstrap import bootstrap_ci
from vistrain.evaluation.calibration import (MIN_IMAGES, calibration_summary, decide_temperature,
                                             fit_temperature, nll, scale_probabilities, stratified_halves)
from vistrain.evaluation.scores import calibration


def softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def synthetic(scale: float, n: int = 2000, k: int = 5, seed: int = 0):
    """Probabilities of a model whose logits are ``scale`` times well-calibrated ones."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    z = 2.0 * np.eye(k)[y] + rng.normal(0, 1.0, (n, k))
    # the true posterior of z ~ N(2 e_y, I) is softmax(2 z): calibrated at scale 1
    return softmax(scale * 2.0 * z), y


@pytest.mark.parametrize("scale", [0.4, 1.0, 3.0])
def test_fitted_temperature_minimises_nll(scale):
    p, y = synthetic(scale)
    t = fit_temperature(p, y)
    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 4001))
    best = grid[np.argmin([nll(scale_probabilities(p, g), y) for g in grid])]
    assert abs(np.log(t) - np.log(best)) < 2e-3
    # the same optimum as LBFGS on the logits, as the reference implementation fits it
    logits = torch.tensor(np.log(p))
    log_t = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits / log_t.exp(), torch.tensor(y))
        loss.backward()
        return loss
    opt.step(closure)
    assert abs(t - float(log_t.detach().exp())) < 1e-3 * t
    assert (t > 1.5) == (scale > 1.5) and (t < 0.7) == (scale < 0.5) and abs(t / scale - 1) < 0.15


def test_argmax_unchanged_and_rows_sum_to_one():
    p, _ = synthetic(3.0)
    for t in (0.3, 1.0, 4.0):
        q = scale_probabilities(p, t)
        assert np.array_equal(q.argmax(1), p.argmax(1))
        np.testing.assert_allclose(q.sum(1), 1.0, atol=1e-12)
    np.testing.assert_allclose(scale_probabilities(p, 1.0), p, atol=1e-9)


def test_nll_matches_scikit_learn():
    p, y = synthetic(2.0)
    assert nll(p, y) == pytest.approx(log_loss(y, p, labels=np.arange(p.shape[1])), rel=1e-9)


@pytest.mark.parametrize("scale", [0.4, 3.0])
def test_scaling_lowers_ece_and_nll_on_held_out_data(scale):
    p_val, y_val = synthetic(scale, seed=1)
    p_test, y_test = synthetic(scale, seed=2)
    t = fit_temperature(p_val, y_val)
    s = calibration_summary(p_test, y_test, t)
    assert s["nll_after"] < s["nll_before"] and s["ece_after"] < s["ece_before"]
    assert sum(s["reliability_after"]["count"]) == len(y_test)


def small_data(n_per_class: int, k: int = 10, seed: int = 0, scale: float = 1.0):
    """Probabilities of a moderately accurate, calibrated-at-scale-1 model, ``n_per_class`` each."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(k), n_per_class)
    z = 1.2 * np.eye(k)[y] + rng.normal(0, 1.0, (len(y), k))
    return softmax(scale * 2.0 * z), y


def test_halves_are_disjoint_stratified_and_seeded():
    y = np.repeat(np.arange(4), [5, 6, 7, 8])
    a, b = stratified_halves(y, seed=3)
    assert len(np.intersect1d(a, b)) == 0 and len(a) + len(b) == len(y)
    assert all(abs((y[a] == c).sum() - (y[b] == c).sum()) <= 1 for c in range(4))
    assert abs(len(a) - len(b)) <= 1
    assert [h.tolist() for h in stratified_halves(y, seed=3)] == [a.tolist(), b.tolist()]


def test_the_25_per_class_case_keeps_the_raw_softmax():
    """250 images, 10 classes, a 15 % validation split (37 images): too few to fit a T."""
    p, y = small_data(25)
    val = np.random.default_rng(0).choice(len(y), 37, replace=False)
    d = decide_temperature(p[val], y[val])
    assert d["decision"] == "not applied" and d["temperature"] == 1.0
    assert "too small" in d["reason"] and "37 images" in d["reason"]
    assert d["heldout_nll_before"] is None
    few = decide_temperature(*small_data(2, k=30))  # 60 images, but 2 per class
    assert few["decision"] == "not applied" and "fewest per class 2" in few["reason"]


def test_a_temperature_that_does_not_lower_held_out_nll_is_not_applied():
    """Calibrated probabilities: any fitted T is noise; over many seeds the cross-fit rejects it
    on some splits and, where it applies one, that T is close to 1 and lowered held-out NLL."""
    decisions = [decide_temperature(*small_data(8, seed=s)) for s in range(20)]
    rejected = [d for d in decisions if d["decision"] == "not applied"]
    assert rejected, [d["half_temperatures"] for d in decisions]
    for d in rejected:
        assert d["temperature"] == 1.0
        if "does not lower" in d["reason"]:
            assert d["heldout_nll_after"] >= d["heldout_nll_before"]
        else:  # a lower NLL that comes with a higher ECE is not taken either
            assert "raises its ECE" in d["reason"]
            assert d["heldout_ece_after"] > d["heldout_ece_before"] + d["heldout_ece_noise"]
    for d in decisions:
        if d["decision"] == "applied":
            assert d["heldout_nll_after"] < d["heldout_nll_before"] and 0.5 < d["temperature"] < 2
            assert d["heldout_ece_after"] <= d["heldout_ece_before"] + d["heldout_ece_noise"]


@pytest.mark.parametrize("scale", [0.4, 3.0])
def test_a_clearly_miscalibrated_model_gets_its_temperature(scale):
    p, y = small_data(10, scale=scale)
    d = decide_temperature(p, y)
    assert d["decision"] == "applied" and d["n_images"] == 100 >= MIN_IMAGES
    assert d["heldout_nll_after"] < d["heldout_nll_before"]
    assert d["temperature"] == pytest.approx(fit_temperature(p, y), rel=1e-5)
    assert (d["temperature"] > 1) == (scale > 1)


def test_bootstrap_interval_of_ece_holds_the_point_estimate():
    p, y = small_data(30)
    ece, _ = calibration(p.max(1), p.argmax(1) == y, 15)
    ci = bootstrap_ci(y, p.argmax(1), p, 300, 0)["ece"]
    assert ci["low"] < ece < ci["high"] and ci["high"] - ci["low"] > 0.01
    # the vectorised resample ECE equals scores.calibration on one explicit resample
    from vistrain.evaluation.bootstrap import _resampled_ece, resample_prep
    idx = np.random.default_rng(1).integers(0, len(y), (1, len(y)))
    q = p[idx[0]]
    want, _ = calibration(q.max(1), q.argmax(1) == y[idx[0]], 15)
    assert _resampled_ece(idx, resample_prep(y, p.argmax(1), p, 15))[0] == pytest.approx(want, abs=1e-12)


@pytest.mark.slow
def test_training_records_the_decision_for_the_25_per_class_case(tmp_path, capsys):
    """End to end: 250 images, 10 classes; the 37-image validation split keeps T = 1 and the
    run says why in run.json, model.json, metrics.json and the report."""
    from vistrain.cli.main import main
    classes = [f"c{i}" for i in range(10)]
    data = make_image_folder(tmp_path / "data", classes=classes, per_class=25, size=(20, 20))
    out = tmp_path / "run"
    assert main(["train", str(data), "--out", str(out), "--model", "vistrain/resnet-tiny", "--no-pretrained",
                 "--set", "preprocess.size=16", "--epochs", "1", "--batch-size", "32",
                 "--set", "data.cache=off", "--set", "data.num_workers=0"]) == 0
    out_text = capsys.readouterr().out
    record = json.loads((out / "run.json").read_text())["calibration"]
    assert record["decision"] == "not applied" and record["temperature"] == 1.0
    assert "too small" in record["reason"]
    assert json.loads((out / "model.json").read_text())["calibration"]["temperature"] == 1.0
    test = json.loads((out / "metrics.json").read_text())["test"]
    assert test["calibration"]["decision"] == "not applied"
    assert test["calibration"]["ece_after"] == test["calibration"]["ece_before"] == pytest.approx(test["ece"])
    assert test["ci95"]["ece"]["low"] <= test["ece"] <= test["ci95"]["ece"]["high"]
    assert "ECE" in out_text and "95% CI" in out_text
    page = (out / "report.html").read_text()
    assert "Temperature scaling not applied" in page and "too small" in page
