"""Point estimates of a classifier's quality: accuracy, P/R/F1, ROC AUC, top-k, calibration.

The pieces :func:`~vistrain.evaluation.metrics.compute_metrics` assembles (its docstring states
the definitions, the absent-class policy and the key layout).  Inputs are validated there:
``y`` (N,) int64 labels, ``y_pred`` (N,) predicted labels, ``p`` (N, K) float64 probabilities.
Values are Python floats, ``None`` where undefined (:func:`num`: JSON has no NaN).

Example:
    >>> import numpy as np
    >>> ece, bins = calibration(np.array([0.9, 0.6, 0.8]), np.array([True, False, True]), 2)
    >>> round(ece, 4), bins["count"]
    (0.1, [0, 3])
"""
from __future__ import annotations

import math
import warnings

import numpy as np


def num(x):
    """A Python float, or None for None/NaN (JSON has no NaN)."""
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


def classification_scores(y, y_pred, n_classes, present):
    """Accuracy, balanced accuracy, per-class/macro/weighted P/R/F1 and confusion matrices."""
    # scikit-learn is heavy: imported on first use, so importing vistrain.evaluation stays light
    from sklearn.metrics import (accuracy_score, balanced_accuracy_score, confusion_matrix,
                                 precision_recall_fscore_support)
    labels = np.arange(n_classes)
    prec, rec, f1, _ = precision_recall_fscore_support(y, y_pred, labels=labels, average=None,
                                                       zero_division=0)
    averages = {}
    for avg in ("macro", "weighted"):
        # labels=present is the absent-class policy: absent classes leave the macro average.
        ap, ar, af, _ = precision_recall_fscore_support(y, y_pred, labels=present, average=avg,
                                                        zero_division=0)
        averages[avg] = {"precision": num(ap), "recall": num(ar), "f1": num(af)}
    with warnings.catch_warnings():
        # Predictions of an absent class: sklearn warns, then drops that class from the mean,
        # which is the policy (balanced accuracy = macro recall over present classes).
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        balanced = balanced_accuracy_score(y, y_pred)
    return {
        "accuracy": accuracy_score(y, y_pred), "balanced_accuracy": balanced,
        "precision": prec, "recall": rec, "f1": f1,
        "n_predicted": np.bincount(y_pred, minlength=n_classes),
        "macro": averages["macro"], "weighted": averages["weighted"],
        "cm": confusion_matrix(y, y_pred, labels=labels),
        # normalize="true" divides each row by its support and turns 0/0 rows into zeros.
        "cm_norm": confusion_matrix(y, y_pred, labels=labels, normalize="true"),
    }


def auc_roc(y, p, support, names):
    """ROC AUC: binary from probs[:, 1]; multi-class one-vs-rest over the present classes."""
    # scikit-learn is heavy: imported on first use, so importing vistrain.evaluation stays light
    from sklearn.metrics import roc_auc_score
    n_classes = p.shape[1]
    binary = n_classes == 2
    out = {"method": "binary" if binary else "ovr",
           "positive_class": names[1] if binary else None,
           "value": None, "macro": None, "weighted": None, "reason": None,
           "per_class": np.full(n_classes, np.nan)}
    present = np.flatnonzero(support > 0)
    if len(present) < 2:
        out["reason"] = (f"y_true holds a single class ({names[present[0]]}); ROC AUC needs "
                         "samples of at least two classes")
        return out
    if binary:
        auc = float(roc_auc_score(y, p[:, 1]))
        out.update(value=auc, macro=auc, weighted=auc, per_class=np.full(2, auc))
        return out
    per_class = out["per_class"]
    for c in present:
        # Column by column, this is exactly what roc_auc_score(multi_class="ovr") computes; doing
        # it per class lets absent classes be skipped (sklearn's ovr refuses them outright).
        per_class[c] = roc_auc_score(y == c, p[:, c])
    macro = float(per_class[present].mean())
    out.update(value=macro, macro=macro,
               weighted=float(np.average(per_class[present], weights=support[present])))
    return out


def top_k_accuracy(y, p, ks, accuracy):
    """{"k": top-k accuracy} for each requested k < K."""
    # scikit-learn is heavy: imported on first use, so importing vistrain.evaluation stays light
    from sklearn.metrics import top_k_accuracy_score
    n_classes = p.shape[1]
    out = {}
    for kk in sorted({int(v) for v in ks}):
        if kk < 1:
            raise ValueError(f"top-k accuracy needs k >= 1, got {kk}")
        if kk >= n_classes:
            continue  # every label is in the top K: always 1, meaningless
        if n_classes == 2:
            # Only k=1 gets here; sklearn's binary top-k wants 1-D scores, and top-1 = accuracy.
            out[str(kk)] = num(accuracy)
        else:
            out[str(kk)] = float(top_k_accuracy_score(y, p, k=kk, labels=np.arange(n_classes)))
    return out


def calibration(confidence, correct, n_bins):
    """Expected calibration error and reliability bins of the top-1 confidence.

    Bin ``b`` holds ``edges[b] < confidence <= edges[b+1]`` (bin 0 also holds 0).
    ``ECE = sum_b (n_b / N) * |accuracy_b - confidence_b|``.
    """
    if int(n_bins) < 1:
        raise ValueError(f"ece_bins must be >= 1, got {n_bins}")
    edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
    idx = np.searchsorted(edges[1:-1], confidence, side="left")
    count = np.bincount(idx, minlength=n_bins)
    sum_conf = np.bincount(idx, weights=confidence, minlength=n_bins)
    sum_acc = np.bincount(idx, weights=correct.astype(np.float64), minlength=n_bins)
    # (n_b/N) * |acc_b - conf_b| == |sum_acc_b - sum_conf_b| / N, and needs no empty-bin care.
    ece = float(np.abs(sum_acc - sum_conf).sum() / len(confidence))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf, mean_acc = sum_conf / count, sum_acc / count
    return ece, {"edges": edges.tolist(), "confidence": [num(v) for v in mean_conf],
                 "accuracy": [num(v) for v in mean_acc], "count": count.tolist()}
