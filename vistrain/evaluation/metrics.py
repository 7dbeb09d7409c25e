"""Classification metrics, computed with scikit-learn where it has the metric.

:func:`compute_metrics` turns labels ``y_true`` (N,) and predicted probabilities ``probs`` (N, K)
into one JSON-serialisable dict (only ``dict``/``list``/``str``/``int``/``float``/``None``; an
undefined value is ``None``, never NaN).  The prediction is ``argmax(probs)`` (ties go to the lower
class index).  Class ``i`` is ``class_names[i]``; every class list below is in that order.

Key layout (stable; ``metrics.json`` stores exactly this)::

    n_samples, n_classes, class_names, absent_classes (names of classes with no sample in y_true)
    accuracy, balanced_accuracy               float
    top_k_accuracy   {"1": float, "5": float}  only for requested k < K (k >= K is trivially 1)
    macro, weighted  {precision, recall, f1, auc_roc}
    per_class        [{class, index, support, n_predicted, precision, recall, f1, auc_roc}, ...]
    auc_roc          {method: "binary"|"ovr", positive_class, value, macro, weighted, reason}
    confusion_matrix             K x K counts, rows = true class, columns = predicted class
    confusion_matrix_normalized  rows divided by their support; a row with no support is all 0
    ece              expected calibration error of the top-1 confidence, ``ece_bins`` equal bins
    nll              mean negative log-likelihood of the true class (log loss)
    reliability      {edges: B+1 floats, confidence: B, accuracy: B, count: B}; empty bin -> None
    ci95             {accuracy, balanced_accuracy, macro_f1, macro_auc_roc: {low, high}}
    bootstrap        {method: "percentile", level: 0.95, n_resamples, seed}

Absent-class policy.  A class listed in ``class_names`` but with no sample in ``y_true`` has no
recall, F1 or ROC AUC (there is nothing to recall or rank).  It is listed in ``absent_classes``,
its ``recall``/``f1``/``auc_roc`` in ``per_class`` are ``None``, and it is *excluded* from every
macro average (precision, recall, F1, AUC) instead of being averaged in as 0; macro averages are
therefore over the classes present in ``y_true`` -- exactly scikit-learn with ``labels=present``.
Precision of an absent class is reported as scikit-learn gives it: 0.0 (every prediction of it is
a false positive; 0/0 -> 0 when it is never predicted), with ``n_predicted`` showing how often the
model predicted it.  It is excluded from macro precision too, but those wrong predictions still
count as misses in the recall of the samples' true classes, so accuracy, recall and F1 pay for
them.  Weighted averages weight by support, so absent classes have weight 0 there anyway.
``balanced_accuracy`` is the macro recall over present classes (scikit-learn's definition).
A present class that is never predicted gets precision 0 (``zero_division=0``) and *is* averaged.

ROC AUC.  Binary (K == 2): the AUC of ``probs[:, 1]`` for the positive class ``class_names[1]``;
both per-class rows carry it (swapping the classes does not change the AUC), and macro = weighted
= value.  Multi-class: one-vs-rest per class, ``value`` = macro.  When y_true holds a single class
every AUC is ``None`` and ``auc_roc["reason"]`` says why.

Confidence intervals: percentile bootstrap over samples (``n_bootstrap`` resamples drawn with
``numpy.random.default_rng(seed)``), each resample scored with the same definitions as the point
estimate; ``n_bootstrap=0`` gives ``None`` bounds.  For binary tasks ``macro_auc_roc`` is the AUC.

The pieces live in :mod:`~vistrain.evaluation.scores` (point estimates, calibration),
:mod:`~vistrain.evaluation.bootstrap` (intervals), :mod:`~vistrain.evaluation.tables`
(:func:`format_table`) and :mod:`~vistrain.evaluation.fold_metrics` (:func:`summarize_folds`,
:func:`format_folds`); this module assembles them into the one dict.

Example::

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> probs = rng.dirichlet(np.ones(3), size=200)
    >>> y = rng.integers(0, 3, size=200)
    >>> m = compute_metrics(y, probs, ["cat", "dog", "fox"], n_bootstrap=200)
    >>> sorted(m["macro"])
    ['auc_roc', 'f1', 'precision', 'recall']
    >>> print(format_table(m).splitlines()[0])  # doctest: +ELLIPSIS
    200 samples, 3 classes...
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from vistrain.evaluation.bootstrap import CI_METRICS, bootstrap_ci
from vistrain.evaluation.calibration import nll
from vistrain.evaluation.fold_metrics import format_folds, summarize_folds
from vistrain.evaluation.scores import (auc_roc, calibration, classification_scores, num,
                                        top_k_accuracy)
from vistrain.evaluation.tables import format_table

# format_table, summarize_folds and format_folds are gathered here for the callers of this module.
__all__ = ["compute_metrics", "format_table", "summarize_folds", "format_folds", "CI_METRICS"]

# Row sums of ``probs`` may differ from 1 by this much (float16/float32 softmax round-off).
PROB_SUM_ATOL = 1e-3


def compute_metrics(y_true, probs, class_names: Sequence[str], *, k: Sequence[int] = (1, 5),
                    n_bootstrap: int = 1000, seed: int = 0, ece_bins: int = 15) -> dict:
    """All evaluation metrics of a classifier, as one JSON-serialisable dict.

    Args:
        y_true: (N,) integer labels in ``[0, K)``.
        probs: (N, K) predicted probabilities (rows sum to 1, e.g. a softmax output).
        class_names: K names; ``class_names[i]`` is label ``i``.
        k: top-k accuracies to report (only those with ``k < K``).
        n_bootstrap: bootstrap resamples for ``ci95`` (0 disables them).
        seed: seed of the bootstrap resampling.
        ece_bins: number of equal-width confidence bins of ``ece``/``reliability``.

    Returns the dict described in the module docstring.

    Example::

        >>> m = compute_metrics([0, 1, 1], [[.9, .1], [.4, .6], [.7, .3]], ["no", "yes"],
        ...                     n_bootstrap=0)
        >>> round(m["accuracy"], 4), m["auc_roc"]["value"]
        (0.6667, 1.0)
    """
    y, p, names = _validate(y_true, probs, class_names)
    n, n_classes = p.shape
    y_pred = p.argmax(axis=1)
    support = np.bincount(y, minlength=n_classes)
    present = np.flatnonzero(support > 0)

    cls = classification_scores(y, y_pred, n_classes, present)
    auc = auc_roc(y, p, support, names)
    ece, reliability = calibration(p.max(axis=1), y_pred == y, ece_bins)
    return {
        "n_samples": int(n),
        "n_classes": int(n_classes),
        "class_names": names,
        "absent_classes": [names[i] for i in np.flatnonzero(support == 0)],
        "accuracy": num(cls["accuracy"]),
        "balanced_accuracy": num(cls["balanced_accuracy"]),
        "top_k_accuracy": top_k_accuracy(y, p, k, cls["accuracy"]),
        "macro": {**cls["macro"], "auc_roc": num(auc["macro"])},
        "weighted": {**cls["weighted"], "auc_roc": num(auc["weighted"])},
        "per_class": _per_class(names, support, cls, auc),
        "auc_roc": {key: (num(v) if isinstance(v, float) else v)
                    for key, v in auc.items() if key != "per_class"},
        "confusion_matrix": cls["cm"].tolist(),
        "confusion_matrix_normalized": [[float(v) for v in row] for row in cls["cm_norm"]],
        "ece": ece,
        "nll": nll(p, y),
        "reliability": reliability,
        "ci95": bootstrap_ci(y, y_pred, p, n_bootstrap, seed, ece_bins),
        "bootstrap": {"method": "percentile", "level": 0.95,
                      "n_resamples": max(0, int(n_bootstrap)), "seed": int(seed)},
    }


def _per_class(names, support, cls, auc) -> list[dict]:
    """One row per class; recall, F1 (and AUC) of a class absent from y_true are None."""
    return [{"class": names[i], "index": i, "support": int(support[i]),
             "n_predicted": int(cls["n_predicted"][i]), "precision": num(cls["precision"][i]),
             "recall": num(cls["recall"][i]) if support[i] else None,
             "f1": num(cls["f1"][i]) if support[i] else None,
             "auc_roc": num(auc["per_class"][i])}
            for i in range(len(names))]


def _validate(y_true, probs, class_names):
    """Check shapes and ranges; return (int64 labels, float64 probs, list of str names)."""
    y = np.asarray(y_true)
    p = np.asarray(probs, dtype=np.float64)
    names = [str(c) for c in class_names]
    if y.ndim != 1 or p.ndim != 2 or len(y) != len(p):
        raise ValueError(f"y_true must be (N,) and probs (N, K); got {y.shape} and {p.shape}")
    if len(y) == 0:
        raise ValueError("cannot compute metrics on 0 samples")
    if p.shape[1] != len(names) or len(names) < 2:
        raise ValueError(f"probs has {p.shape[1]} columns but there are {len(names)} class names "
                         "(need the same number, at least 2)")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.mod(y, 1) == 0):
            raise ValueError("y_true must hold integer class indices")
    y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= len(names):
        raise ValueError(f"y_true holds labels outside [0, {len(names)})")
    sums = p.sum(axis=1)
    if not np.all(np.isfinite(p)) or p.min() < 0 or not np.allclose(sums, 1.0, atol=PROB_SUM_ATOL):
        bad = int(np.argmax(np.abs(sums - 1.0)))
        raise ValueError("probs must be finite probabilities whose rows sum to 1 (apply softmax "
                         f"to logits first); row {bad} sums to {sums[bad]:.6g}")
    return y, p, names
