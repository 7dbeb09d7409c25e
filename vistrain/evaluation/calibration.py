"""Temperature scaling (Guo et al. 2017): one number ``T`` that makes a classifier's confidence
match its accuracy, fitted on the validation split, never on the test split.

A softmax classifier's logits ``z`` become ``softmax(z / T)``.  ``T > 1`` softens over-confident
probabilities, ``T < 1`` sharpens under-confident ones; the predicted class (the argmax) never
changes, so accuracy, precision, recall and F1 stay exactly the same while the negative
log-likelihood (NLL) and the expected calibration error (ECE) fall.  Probabilities are enough:
``log p`` equals the logits up to a per-row constant, which softmax ignores.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 3, 500)
    >>> z = 6.0 * np.eye(3)[y] + rng.normal(0, 3, (500, 3))       # over-confident logits
    >>> p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    >>> t = fit_temperature(p, y)
    >>> t > 1, nll(scale_probabilities(p, t), y) < nll(p, y)
    (True, True)
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

from vistrain.evaluation.scores import calibration

# log T is searched in [log 0.05, log 20]: beyond, a model is either almost uniform or one-hot
LOG_T_BOUNDS = (float(np.log(0.05)), float(np.log(20.0)))
_TINY = 1e-12


def log_probabilities(probs: np.ndarray) -> np.ndarray:
    """``(N, K)`` log of ``probs`` (clipped away from 0): logits up to a per-row constant."""
    return np.log(np.clip(np.asarray(probs, dtype=np.float64), _TINY, 1.0))


def scale_probabilities(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``(N, K)`` ``softmax(log(probs) / temperature)``, computed stably."""
    z = log_probabilities(probs) / float(temperature)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes ``labels`` (N,) under ``probs`` (N, K)."""
    labels = np.asarray(labels, dtype=np.int64)
    return float(-log_probabilities(probs)[np.arange(len(labels)), labels].mean())


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The ``T`` minimising the NLL of ``scale_probabilities(probs, T)`` on ``labels``.

    A one-dimensional, smooth problem in ``log T``: bounded Brent search to ~1e-6.
    """
    z = log_probabilities(probs)
    labels = np.asarray(labels, dtype=np.int64)
    rows = np.arange(len(labels))

    def loss(log_t: float) -> float:
        s = z / np.exp(log_t)
        s_max = s.max(axis=1)
        return float((s_max + np.log(np.exp(s - s_max[:, None]).sum(axis=1)) - s[rows, labels]).mean())

    result = minimize_scalar(loss, bounds=LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-6})
    return float(np.exp(result.x))


def calibration_summary(probs: np.ndarray, labels: np.ndarray, temperature: float, n_bins: int = 15) -> dict:
    """NLL, ECE and reliability bins before and after scaling by ``temperature``:
    ``{"n_samples", "nll_before", "nll_after", "ece_before", "ece_after", "reliability_before",
    "reliability_after"}``."""
    labels = np.asarray(labels, dtype=np.int64)
    after = scale_probabilities(probs, temperature)
    out = {"n_samples": int(len(labels))}
    for name, p in (("before", np.asarray(probs, dtype=np.float64)), ("after", after)):
        ece, bins = calibration(p.max(axis=1), p.argmax(axis=1) == labels, n_bins)
        out[f"nll_{name}"], out[f"ece_{name}"], out[f"reliability_{name}"] = nll(p, labels), ece, bins
    return out
