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
    >>> d = decide_temperature(p[:300], y[:300])   # cross-fitted on halves: applied only if it helps
    >>> d["decision"], d["heldout_nll_after"] < d["heldout_nll_before"]
    ('applied', True)

A temperature fitted on a few dozen images is mostly noise and can make the test calibration
worse.  :func:`decide_temperature` therefore applies ``T`` only when the validation split has at
least :data:`MIN_IMAGES` images and :data:`MIN_PER_CLASS` per class, *and* a temperature fitted
on one stratified half lowers the NLL of the other half (both ways, summed) without raising its
ECE by more than the ECE's own noise (:func:`ece_noise`); otherwise ``T = 1`` (the raw softmax) with the reason recorded.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

from vistrain.evaluation.scores import calibration

# The smallest validation split a temperature is fitted on: each stratified half then has >= 25
# images and >= 1 of every class, enough for a held-out NLL to tell a helpful T from noise.
MIN_IMAGES = 50
MIN_PER_CLASS = 3
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
    after = np.asarray(probs, dtype=np.float64) if temperature == 1.0 else scale_probabilities(probs, temperature)
    out = {"n_samples": int(len(labels))}
    for name, p in (("before", np.asarray(probs, dtype=np.float64)), ("after", after)):
        ece, bins = calibration(p.max(axis=1), p.argmax(axis=1) == labels, n_bins)
        out[f"nll_{name}"], out[f"ece_{name}"], out[f"reliability_{name}"] = nll(p, labels), ece, bins
    return out


def stratified_halves(labels: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint index arrays that split each class of ``labels`` (N,) in half (seeded shuffle;
    an odd class gives its extra image to the half that has fewer so far)."""
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    halves: tuple[list, list] = ([], [])
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        cut = len(members) // 2 + (len(members) % 2 if len(halves[0]) <= len(halves[1]) else 0)
        halves[0].extend(members[:cut])
        halves[1].extend(members[cut:])
    return np.sort(np.array(halves[0], np.int64)), np.sort(np.array(halves[1], np.int64))


def decide_temperature(probs: np.ndarray, labels: np.ndarray, *, seed: int = 0) -> dict:
    """Whether temperature scaling helps on this validation split, and its ``T``.

    ``probs`` (N, K) raw softmax of the validation images, ``labels`` (N,).  Returns the
    ``calibration`` record: ``{"method": "temperature", "temperature", "decision": "applied" |
    "not applied", "reason", "fitted_on": "val", "n_images", "heldout_nll_before",
    "heldout_nll_after", "half_temperatures"}``.  ``temperature`` is 1.0 unless applied; then it
    is fitted on the whole split.  Held-out NLLs are None when the split is too small to test.
    """
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    n = len(labels)
    record = {"method": "temperature", "temperature": 1.0, "decision": "not applied", "fitted_on": "val",
              "n_images": int(n), "heldout_nll_before": None, "heldout_nll_after": None,
              "half_temperatures": None}
    fewest = int(np.bincount(labels, minlength=probs.shape[1]).min()) if n else 0
    if n < MIN_IMAGES or fewest < MIN_PER_CLASS:
        record["reason"] = (f"validation split too small to fit a temperature ({n} images, fewest per class "
                            f"{fewest}; needs >= {MIN_IMAGES} and >= {MIN_PER_CLASS} per class): raw softmax kept")
        return record
    a, b = stratified_halves(labels, seed)
    t_a, t_b = fit_temperature(probs[a], labels[a]), fit_temperature(probs[b], labels[b])
    held_out = np.empty_like(probs)  # each half scaled by the other half's temperature
    held_out[b], held_out[a] = scale_probabilities(probs[b], t_a), scale_probabilities(probs[a], t_b)
    before, after = nll(probs, labels), nll(held_out, labels)
    ece_before, ece_after = _ece(probs, labels), _ece(held_out, labels)
    record.update(heldout_nll_before=round(before, 6), heldout_nll_after=round(after, 6),
                  heldout_ece_before=round(ece_before, 6), heldout_ece_after=round(ece_after, 6),
                  half_temperatures=[round(t_a, 6), round(t_b, 6)])
    if not after < before:
        record["reason"] = (f"a temperature fitted on one half of val does not lower the other half's NLL "
                            f"({before:.4f} -> {after:.4f}, T = {t_a:.3f} / {t_b:.3f}): raw softmax kept")
        return record
    noise = ece_noise(probs, labels, seed=seed)
    record["heldout_ece_noise"] = round(noise, 6)
    if ece_after > ece_before + noise:  # NLL gained on a few confident errors, confidence drifted
        record["reason"] = (f"a temperature fitted on one half of val lowers the other half's NLL "
                            f"({before:.4f} -> {after:.4f}) but raises its ECE beyond its noise "
                            f"({ece_before:.4f} -> {ece_after:.4f}, noise {noise:.4f}, T = {t_a:.3f} / "
                            f"{t_b:.3f}): raw softmax kept")
        return record
    t = fit_temperature(probs, labels)
    record.update(temperature=round(t, 6), decision="applied",
                  reason=f"cross-fitted on val halves, held-out NLL {before:.4f} -> {after:.4f}, "
                         f"ECE {ece_before:.4f} -> {ece_after:.4f}")
    return record


def ece_noise(probs: np.ndarray, labels: np.ndarray, *, n_boot: int = 200, seed: int = 0) -> float:
    """Half the width of the 95 % bootstrap interval of the ECE of ``probs``: how much an ECE
    measured on these few images moves by chance (what a change must exceed to count)."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    draws = [_ece(probs[i], labels[i]) for i in (rng.integers(0, n, n) for _ in range(n_boot))]
    low, high = np.percentile(draws, [2.5, 97.5])
    return float(high - low) / 2


def _ece(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    return float(calibration(probs.max(axis=1), probs.argmax(axis=1) == labels, n_bins)[0])
