"""95% percentile-bootstrap confidence intervals of the headline metrics, vectorised.

:func:`bootstrap_ci` draws ``n_bootstrap`` resamples of the N samples with replacement
(``numpy.random.default_rng(seed)``) and scores each with the definitions of the point estimates
(classes absent from a resample leave its macro averages) -- with bincounts over all resamples at
once, and ROC AUC as a weighted Mann-Whitney statistic, instead of a Python loop calling
scikit-learn per resample.  A resample where a metric is undefined (AUC with one class) is
skipped for that metric.

Example:
    >>> import numpy as np
    >>> y = np.array([0, 0, 1, 1, 1]); p = np.array([[.8, .2], [.4, .6], [.3, .7], [.6, .4], [.1, .9]])
    >>> ci = bootstrap_ci(y, p.argmax(1), p, n_bootstrap=200, seed=0)
    >>> sorted(ci), 0 <= ci["accuracy"]["low"] <= 0.6 <= ci["accuracy"]["high"] <= 1
    (['accuracy', 'balanced_accuracy', 'ece', 'macro_auc_roc', 'macro_f1'], True)
"""
from __future__ import annotations

import numpy as np

from vistrain.evaluation.scores import num

CI_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc_roc", "ece")

# Resamples are scored in chunks of about this many (resample, sample) pairs: bounded memory
# (~16 MB of float64 per array) whatever N and n_bootstrap are.
_CHUNK_ELEMS = 2_000_000


def bootstrap_ci(y, y_pred, p, n_bootstrap, seed, ece_bins=15):
    """95% percentile-bootstrap intervals of the CI_METRICS; resamples of N samples with
    replacement.  Resamples where a metric is undefined (e.g. AUC with one class) are skipped.
    ``ece`` uses ``ece_bins`` equal-width bins, as :func:`~vistrain.evaluation.scores.calibration`."""
    if int(n_bootstrap) <= 0:
        return {m: {"low": None, "high": None} for m in CI_METRICS}
    rng = np.random.default_rng(seed)
    n = len(y)
    prep = resample_prep(y, y_pred, p, ece_bins)
    draws = {m: [] for m in CI_METRICS}
    chunk = max(1, _CHUNK_ELEMS // n)
    for start in range(0, int(n_bootstrap), chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_bootstrap - start), n))
        for name, values in resample_scores(idx, prep).items():
            draws[name].append(values)
    out = {}
    for name in CI_METRICS:
        values = np.concatenate(draws[name])
        values = values[~np.isnan(values)]
        low, high = np.percentile(values, [2.5, 97.5]) if len(values) else (None, None)
        out[name] = {"low": num(low), "high": num(high)}
    return out


def resample_prep(y, y_pred, p, ece_bins=15):
    """What scoring a resample needs, computed once: per AUC class, the ascending score order,
    the starts of runs of tied scores (None when there are no ties) and the positive mask; the
    top-1 confidence and its ECE bin (the bins of ``scores.calibration``)."""
    n_classes = p.shape[1]
    present = np.flatnonzero(np.bincount(y, minlength=n_classes) > 0)
    # Binary AUC is the AUC of the positive class; multi-class averages OvR over present classes.
    auc_classes = [1] if n_classes == 2 else list(present)
    auc = []
    if len(present) >= 2:
        for c in auc_classes:
            order = np.argsort(p[:, c], kind="stable")
            s = p[order, c]
            starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
            positive = y[order] == c
            auc.append((order, None if len(starts) == len(s) else starts, positive,
                        np.flatnonzero(positive)))
    confidence = np.asarray(p, dtype=np.float64).max(axis=1)
    edges = np.linspace(0.0, 1.0, int(ece_bins) + 1)
    return {"y": y, "y_pred": y_pred, "correct": (y == y_pred).astype(np.float64),
            "n_classes": n_classes, "auc": auc, "confidence": confidence, "ece_bins": int(ece_bins),
            "ece_bin": np.searchsorted(edges[1:-1], confidence, side="left")}


def resample_scores(idx, prep):
    """Scores of resamples ``idx`` (B, N) of sample indices: {metric: (B,) array, NaN where
    undefined}.  Same definitions as the point estimates (classes absent from a resample leave
    its macro averages), computed with bincounts instead of a Python loop over resamples."""
    b, n = idx.shape
    k = prep["n_classes"]
    rows = np.arange(b)[:, None]
    correct = prep["correct"][idx]
    true_bins = (rows * k + prep["y"][idx]).ravel()
    support = np.bincount(true_bins, minlength=b * k).reshape(b, k)
    tp = np.bincount(true_bins, weights=correct.ravel(), minlength=b * k).reshape(b, k)
    n_pred = np.bincount((rows * k + prep["y_pred"][idx]).ravel(), minlength=b * k).reshape(b, k)
    present = support > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(present, tp / support, 0.0)
        f1 = np.where(present, 2 * tp / (support + n_pred), 0.0)  # = 2PR/(P+R), 0 when tp = 0
    n_present = present.sum(axis=1)
    scores = {"accuracy": correct.mean(axis=1), "balanced_accuracy": recall.sum(1) / n_present,
              "macro_f1": f1.sum(1) / n_present, "macro_auc_roc": np.full(b, np.nan),
              "ece": _resampled_ece(idx, prep)}
    if prep["auc"]:
        # Multiplicity of each sample in each resample: AUC is a weighted Mann-Whitney statistic.
        w = np.bincount((rows * n + idx).ravel(), minlength=b * n).reshape(b, n).astype(np.int32)
        aucs = np.stack([_weighted_auc(w, *cls) for cls in prep["auc"]], axis=1)
        valid = ~np.isnan(aucs)
        with np.errstate(invalid="ignore", divide="ignore"):
            scores["macro_auc_roc"] = np.where(valid, aucs, 0.0).sum(1) / valid.sum(1)
    return scores


def _resampled_ece(idx, prep):
    """(B,) ECE of each resample: ``sum_b |sum_acc_b - sum_conf_b| / N`` per row of ``idx``."""
    b, n = idx.shape
    nb = prep["ece_bins"]
    flat = (np.arange(b)[:, None] * nb + prep["ece_bin"][idx]).ravel()
    diff = (np.bincount(flat, weights=prep["correct"][idx].ravel(), minlength=b * nb)
            - np.bincount(flat, weights=prep["confidence"][idx].ravel(), minlength=b * nb))
    return np.abs(diff).reshape(b, nb).sum(axis=1) / n


def _weighted_auc(w, order, starts, positive, pos_cols):
    """ROC AUC of one class for each row of sample multiplicities ``w`` (B, N) int32:
    P(score_pos > score_neg) + 0.5 P(tie) over the resample (a weighted Mann-Whitney U).

    ``order`` sorts the scores ascending, ``starts`` begins each run of equal scores (None: no
    ties), ``positive`` marks the class's samples in sorted order, ``pos_cols`` = its indices.
    Integer arithmetic keeps it exact (it matches sklearn to ~1e-15) and fast.
    """
    # np.take returns C-contiguous rows, unlike w[:, order]: the row cumsum below is ~8x faster.
    ws = np.take(w, order, axis=1)
    wn = ws * ~positive
    if starts is None:
        # No ties: a positive ties no negative, and wn is 0 at positive columns, so the inclusive
        # cumsum there counts exactly the negatives scored below it.  Only those columns matter.
        wp = ws[:, pos_cols].astype(np.int64)
        twice_num = 2 * np.einsum("ij,ij->i", wp, np.cumsum(wn, axis=1, dtype=w.dtype)[:, pos_cols]
                                  .astype(np.int64))
    else:
        # Merge each run of tied scores; negatives tied with a positive count half.
        wp = np.add.reduceat(ws - wn, starts, axis=1).astype(np.int64)
        wn = np.add.reduceat(wn, starts, axis=1).astype(np.int64)
        twice_num = np.einsum("ij,ij->i", wp, 2 * np.cumsum(wn, axis=1) - wn)
    den = wp.sum(axis=1) * (w.sum(axis=1) - wp.sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, twice_num / (2.0 * den), np.nan)
