"""Temperature scaling: the fitted T minimises the NLL (checked against a dense grid and against
PyTorch's LBFGS on the logits), leaves every argmax alone, lowers ECE on over- and under-confident
models, and the NLL equals scikit-learn's log_loss."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss

from vistrain.evaluation.calibration import (calibration_summary, fit_temperature, nll,
                                             scale_probabilities)


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
